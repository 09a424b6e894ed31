"""Build the VTAB-1k image-folder layout of a task from TensorFlow Datasets (TFDS).

For each task the splits, labels and images follow VTAB-1k (the rules live in the task's registry entry,
`shiplib/data/vtab1k.py`), and images are written like NOAH's `get_vtab1k.py` converter (JPEG with PIL's default
quality 75, 3 channels, native size) in the order train800, val200, test, train800val200. A `prepare.json`
records the TFDS name and version used, the slices, counts and the date.

Example order: sources are read in TFDS record order (ArrayRecord index order; the TFRecord path reads shards
one after the other). VTAB read with tf.data and TFDS's default ReadConfig, which selects the same examples for
every slice but interleaves shards when a slice spans several, so community folders may list the same examples
of a split in another order. The record order itself depends on how TFDS generated the dataset.

Reading needs no TensorFlow: the dataset is generated as ArrayRecord and read with `builder.as_data_source()`.
Generating a dataset (TFDS downloads and converts the raw files) does need TensorFlow for most builders, and a
dataset already generated as TFRecord is read through TensorFlow; both import it lazily and fail with an
install hint when it is missing.
"""
from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import logging
import math
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from .. import __version__
from ..errors import ShiplibError
from ..utils.progress import progress_bar
from .folder import default_root
from .tasks import TaskSpec, get_task, list_tasks
from .vtab1k import TRAIN_SIZE, VAL_SIZE

log = logging.getLogger(__name__)

FORMATS = {"jpeg": ("JPEG", ".jpg"), "png": ("PNG", ".png")}
# The converter writes the splits in this order, each into its own image folder.
WRITE_ORDER = ("train800", "val200", "test", "train800val200")
# Python modules TFDS needs to *generate* each source (beyond tensorflow-datasets); pip names in PIP_NAMES.
GENERATION_NEEDS = {
    "oxford_flowers102": ("scipy",), "svhn_cropped": ("scipy",), "sun397/tfds": ("cv2",),
    "patch_camelyon": ("h5py",), "diabetic_retinopathy_detection/btgraham-300": ("cv2",), "kitti": ("cv2",),
    "dsprites": ("h5py",),
}
PIP_NAMES = {"tensorflow": "tensorflow-cpu", "cv2": "opencv-python-headless",
             "importlib_resources": "importlib-resources"}


class PrepareError(ShiplibError, RuntimeError):
    """A preparation problem the user can fix; the CLI prints its message without a traceback."""


# ----------------------------------------------------------------------------------------------- labels, images

def _thresholded(d: float, thresholds: Sequence[float]) -> int:
    """Index of the largest threshold strictly below d (task_adaptation's binning of distances)."""
    below = [i for i, t in enumerate(thresholds) if t < d]
    if not below:
        raise ValueError(f"distance {d} is not above the lowest threshold {thresholds[0]}")
    return below[-1]


def _num_objects(objects: dict) -> int:
    lengths = {k: len(v) for k, v in objects.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inconsistent per-object feature lengths {lengths}")
    return next(iter(lengths.values()), 0)


CLEVR_DIST_THRESHOLDS = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
KITTI_DIST_THRESHOLDS = (-100.0, 8.0, 20.0, 999.0)
KITTI_VEHICLE_TYPES = (0, 1, 2)  # Car, Van, Truck in TFDS kitti's `objects/type`
KITTI_NO_VEHICLE_DISTANCE = 1000.0


def derive_label(spec: TaskSpec, example: dict) -> int:
    """The VTAB-1k label of one decoded TFDS example (numpy values), by the task's `label_rule`."""
    rule = spec.meta["label_rule"]
    if rule == "label":
        return int(example["label"])
    if rule == "clevr_count":
        return _num_objects(example["objects"]) - 3  # scenes hold 3..10 objects
    if rule == "clevr_closest_distance":
        _num_objects(example["objects"])
        depth = np.asarray(example["objects"]["pixel_coords"], dtype=np.float64).reshape(-1, 3)[:, 2]
        return _thresholded(float(depth.min()), CLEVR_DIST_THRESHOLDS)
    if rule == "kitti_closest_vehicle_distance":
        objects = example["objects"]
        _num_objects(objects)
        is_vehicle = np.isin(np.asarray(objects["type"]), KITTI_VEHICLE_TYPES)
        z = np.asarray(objects["location"], dtype=np.float64).reshape(-1, 3)[is_vehicle, 2]
        return _thresholded(float(z.min()) if z.size else KITTI_NO_VEHICLE_DISTANCE, KITTI_DIST_THRESHOLDS)
    if rule == "dsprites_x_position_16":
        return math.floor(int(example["label_x_position"]) / (32 / 16))
    if rule == "dsprites_orientation_16":
        return math.floor(int(example["label_orientation"]) / (40 / 16))
    if rule == "smallnorb_azimuth":
        return int(example["label_azimuth"])
    if rule == "smallnorb_elevation":
        return int(example["label_elevation"])
    raise ValueError(f"task {spec.name}: unknown label rule {rule!r}")


def derive_image(spec: TaskSpec, example: dict) -> np.ndarray:
    """The (H, W, 3) uint8 image VTAB-1k uses for one example, by the task's `image_rule`."""
    img = np.asarray(example["image"])  # smallNORB: `image` is the first camera (`image2` the second)
    if img.ndim == 2:
        img = img[..., None]
    if spec.meta["image_rule"] == "dsprites_binary":
        img = np.where(img > 0, 255, 0)  # the source is 0/1; VTAB scales it to 0/255
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"task {spec.name}: unexpected image shape {img.shape}")
    return img.astype(np.uint8, copy=False)


# ----------------------------------------------------------------------------------------------- TFDS access

def _import_tfds():
    try:
        import tensorflow_datasets as tfds  # deferred: an optional dependency that loads TensorFlow (seconds)
    except ImportError as e:
        raise PrepareError("preparing VTAB-1k needs TensorFlow Datasets: "
                           "`pip install tensorflow-datasets array_record`") from e
    return tfds


def _require(modules: Sequence[str], why: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pip = " ".join(PIP_NAMES.get(m, m) for m in missing)
        raise PrepareError(f"{why} needs {', '.join(missing)}: `pip install {pip}`")


def open_builder(spec: TaskSpec, data_dir: str | os.PathLike | None, strict_version: bool = False):
    """The TFDS builder at the version VTAB-1k used; a newer one (with a warning) if this TFDS lacks it."""
    tfds = _import_tfds()
    name, wanted = spec.meta["tfds_name"], spec.meta["tfds_version"]
    data_dir = None if data_dir is None else os.fspath(data_dir)
    try:
        return tfds.builder(f"{name}:{wanted}", data_dir=data_dir), None
    except Exception as e:  # TFDS raises AssertionError/ValueError for versions it cannot build or find
        if strict_version:
            raise PrepareError(f"{spec.name}: TFDS {tfds.__version__} cannot provide {name}:{wanted} ({e}). "
                               "Install an older tensorflow-datasets, point --data-dir at a copy generated at "
                               "that version, or drop --strict-version to use the newest version.") from e
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as e2:
            raise PrepareError(f"{spec.name}: TFDS {tfds.__version__} cannot build {name}: {e2}") from e2
        note = (f"VTAB-1k used {name}:{wanted} (VPT: {spec.meta['tfds_version_vpt']}); TFDS {tfds.__version__} "
                f"only provides {builder.info.version}, which may hold different images or order")
        log.warning("%s: %s", spec.name, note)
        return builder, note


def manual_download_help(spec: TaskSpec, manual_dir: Path) -> str | None:
    """Instructions for sources TFDS cannot download itself, or None."""
    name = spec.meta["tfds_name"]
    if name == "resisc45":
        return (f"resisc45 must be downloaded by hand: get NWPU-RESISC45.rar (OneDrive link in TFDS's resisc45 "
                f"page, https://www.tensorflow.org/datasets/catalog/resisc45), extract it so that "
                f"{manual_dir}/NWPU-RESISC45/<class>/<image>.jpg exist (45 class folders, 31,500 images), then "
                f"rerun (or pass --manual-dir to the folder that holds NWPU-RESISC45/).")
    if name.startswith("diabetic_retinopathy_detection"):
        return (f"diabetic_retinopathy must be downloaded by hand from Kaggle "
                f"(https://www.kaggle.com/c/diabetic-retinopathy-detection/data, ~82 GB; accept the competition "
                f"rules first, e.g. `kaggle competitions download -c diabetic-retinopathy-detection`). Put into "
                f"{manual_dir}: train/ (all *.jpeg of train.zip.001-005), test/ (test.zip.001-007), "
                f"sample/ (sample.zip) and trainLabels.csv (from trainLabels.csv.zip). TFDS also downloads the "
                f"test labels (retinopathy_solution.csv) itself. Generating the btgraham-300 config needs "
                f"tensorflow and OpenCV (`pip install tensorflow-cpu opencv-python-headless`). Then rerun "
                f"(or pass --manual-dir).")
    return None


def _manual_files_present(spec: TaskSpec, manual_dir: Path) -> bool:
    name = spec.meta["tfds_name"]
    if name == "resisc45":
        return (manual_dir / "NWPU-RESISC45").is_dir()
    if name.startswith("diabetic_retinopathy_detection"):
        return all((manual_dir / p).exists() for p in ("train", "test", "sample", "trainLabels.csv"))
    return True


def ensure_generated(spec: TaskSpec, builder, manual_dir: str | os.PathLike | None = None) -> None:
    """Let TFDS download and generate the source dataset (as ArrayRecord) unless it already exists."""
    tfds = _import_tfds()
    if builder.is_prepared():
        return
    manual = Path(manual_dir) if manual_dir else Path(builder.data_dir_root) / "downloads" / "manual"
    help_text = manual_download_help(spec, manual)
    if help_text and not _manual_files_present(spec, manual):
        raise PrepareError(help_text)
    name = spec.meta["tfds_name"]
    log.info("%s: TFDS generates %s into %s (downloads the raw data)", spec.name, name, builder.data_dir_root)
    try:
        builder.download_and_prepare(
            file_format="array_record",
            download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual)))
    except ImportError as e:
        missing = (getattr(e, "name", None) or "tensorflow").split(".")[0]
        needs = dict.fromkeys(["tensorflow", *GENERATION_NEEDS.get(name, ()), missing])
        raise PrepareError(
            f"{spec.name}: TFDS needs the module {missing!r} to generate {name}. Install "
            f"`pip install {' '.join(PIP_NAMES.get(m, m) for m in needs)}` and rerun; reading the result "
            f"afterwards needs no TensorFlow.") from e
    except AssertionError as e:
        if "Manual directory" in str(e):
            raise PrepareError(help_text or str(e)) from e
        raise PrepareError(f"{spec.name}: TFDS could not generate {name}: {e}") from e
    except Exception as e:
        extra = (" sun397 downloads ~37 GB from vision.princeton.edu and needs tensorflow and OpenCV; TFDS "
                 "4.9 already skips its two undecodable images." if name.startswith("sun397") else "")
        raise PrepareError(f"{spec.name}: TFDS could not download/generate {name} into {builder.data_dir_root}: "
                           f"{type(e).__name__}: {e}. It needs internet access to the dataset's host.{extra}") from e


class SourceSplit:
    """Random access to one TFDS split in record order: ArrayRecord data source, else TensorFlow reading."""

    def __init__(self, builder, split: str):
        self.builder, self.split = builder, split
        try:
            self._source = builder.as_data_source(split=split)
            self.size = len(self._source)
            self.reader = "array_record (no TensorFlow)"
        except NotImplementedError:  # generated as TFRecord, e.g. by an older VTAB/VPT setup
            _require(["tensorflow"], f"reading {builder.info.full_name}, stored as TFRecord,")
            self._source = None
            self.size = builder.info.splits[split].num_examples
            self.reader = "tfrecord (TensorFlow)"

    def read(self, start: int, stop: int) -> Iterator[dict]:
        if self._source is not None:
            for i in range(start, stop):
                yield self._source[i]
            return
        tfds = _import_tfds()
        ds = self.builder.as_dataset(split=f"{self.split}[{start}:{stop}]", shuffle_files=False,
                                     read_config=tfds.ReadConfig(interleave_cycle_length=1))  # record order
        yield from tfds.as_numpy(ds)


# ----------------------------------------------------------------------------------------------- writing

def _save(img: np.ndarray, path: Path, fmt: str) -> None:
    Image.fromarray(img).save(path, format=FORMATS[fmt][0])  # PIL defaults (JPEG quality 75), like the converter


def _write_split(spec, split, segments, sources, task_tmp: Path, fmt: str, progress: bool) -> tuple[list[str], Counter]:
    img_dir = task_tmp / "images" / split
    img_dir.mkdir(parents=True)
    ext = FORMATS[fmt][1]
    lines, labels = [], Counter()
    total = sum(b - a for _, a, b in segments)
    with progress_bar(total=total, desc=f"{spec.name}/{split}", disable=not progress, leave=False) as bar:
        for src_split, start, stop in segments:
            n_read = 0
            for example in sources[src_split].read(start, stop):
                where = f"{spec.name}: TFDS {src_split}[{start + n_read}]"
                n_read += 1
                try:
                    label = derive_label(spec, example)
                    img = derive_image(spec, example)
                except (KeyError, ValueError) as e:
                    raise PrepareError(f"{where}: cannot derive the VTAB-1k example: {e}") from e
                if not 0 <= label < spec.num_classes:
                    raise PrepareError(f"{where}: label {label} outside 0..{spec.num_classes - 1} "
                                       f"(rule {spec.meta['label_rule']})")
                rel = f"images/{split}/{len(lines):06d}{ext}"
                _save(img, task_tmp / rel, fmt)
                lines.append(f"{rel} {label}")
                labels[label] += 1
                bar.update()
            if n_read != stop - start:
                raise PrepareError(f"{spec.name}: TFDS returned {n_read} examples for {src_split}[{start}:{stop}]")
    (task_tmp / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines, labels


def prepare_task(task: str, out: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
                 manual_dir: str | os.PathLike | None = None, fmt: str = "jpeg", overwrite: bool = False,
                 strict_version: bool = False, progress: bool = True,
                 _testing_sizes: tuple[int, int] | None = None) -> Path:
    """Write `<out>/<task>/` (lists, images, prepare.json) from TFDS; returns the task folder.

    `out` defaults to the project's `data/vtab-1k`. An existing complete folder is kept unless `overwrite`.
    `_testing_sizes=(train, val)` replaces 800/200 and exists only for tests on `tfds.testing.mock_data`; such
    folders are marked `"vtab_sizes": false`.
    """
    spec = get_task(task)
    if spec.benchmark != "vtab1k":
        raise PrepareError(f"{spec.name} is a {spec.benchmark} task, not VTAB-1k; "
                           "build mini-VTAB with `python -m shiplib.data build-mini`")
    if fmt not in FORMATS:
        raise PrepareError(f"unknown image format {fmt!r}; valid: {', '.join(FORMATS)}")
    out = Path(out).expanduser() if out is not None else default_root("vtab1k")
    final = out / spec.name
    if (final / "prepare.json").is_file() and not overwrite:
        log.warning("%s: %s already prepared; keeping it (use --overwrite to rebuild)", spec.name, final)
        return final
    if final.exists() and not overwrite:
        raise PrepareError(f"{final} exists but has no prepare.json (not made by this tool or interrupted); "
                           "move it away or pass --overwrite")
    train_size, val_size = _testing_sizes or (TRAIN_SIZE, VAL_SIZE)

    builder, version_note = open_builder(spec, data_dir, strict_version)
    ensure_generated(spec, builder, manual_dir)
    rule = spec.meta["split_rule"]
    source_names = sorted({"train", rule.val_split, rule.test_split})
    sources = {s: SourceSplit(builder, s) for s in source_names}
    sizes = {s: src.size for s, src in sources.items()}
    expected_sizes = spec.meta["tfds_source_sizes"]
    if any(sizes[s] != expected_sizes.get(s) for s in sizes):
        log.warning("%s: TFDS split sizes %s differ from VTAB-1k's %s; slices follow VTAB's percentages",
                    spec.name, sizes, expected_sizes)
    try:
        segments = rule.segments(sizes, train_size=train_size, val_size=val_size)
    except ValueError as e:
        raise PrepareError(f"{spec.name}: {e}") from e

    tmp = out / f".{spec.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    counts, label_counts = {}, {}
    for split in WRITE_ORDER:
        lines, labels = _write_split(spec, split, segments[split], sources, tmp, fmt, progress)
        counts[split] = len(lines)
        label_counts[split] = {int(k): v for k, v in sorted(labels.items())}
    record = {
        "task": spec.name, "benchmark": spec.benchmark,
        "tfds_name": spec.meta["tfds_name"], "tfds_version": str(builder.info.version),
        "tfds_version_requested": spec.meta["tfds_version"], "tfds_version_vpt": spec.meta["tfds_version_vpt"],
        "tfds_version_note": version_note, "tensorflow_datasets": _import_tfds().__version__,
        "reader": sources["train"].reader, "data_dir": str(builder.data_dir_root),
        "source_split_sizes": sizes, "vtab_source_split_sizes": expected_sizes,
        "splits": rule.slice_strings(sizes, train_size=train_size, val_size=val_size),
        "vtab_sizes": (train_size, val_size) == (TRAIN_SIZE, VAL_SIZE),
        "example_order": "TFDS record order (shards read one after the other, no interleaving)",
        "counts": counts, "label_counts": label_counts,
        "label_rule": spec.meta["label_rule"], "image_rule": spec.meta["image_rule"],
        "format": fmt, "encoder": "PIL defaults" + (" (JPEG quality 75)" if fmt == "jpeg" else ""),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "shiplib_version": __version__,
    }
    (tmp / "prepare.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)  # the task folder appears complete or not at all
    log.info("%s: wrote %s (%s)", spec.name, final, counts)
    return final


def prepare_tasks(tasks: Sequence[str] | None, out: str | os.PathLike, **kwargs) -> dict[str, str]:
    """Prepare several tasks (all VTAB-1k tasks if None); one failure does not stop the others.
    Returns {task: "ok: <dir>" | "error: <message>"}."""
    names = [get_task(t).name for t in tasks] if tasks else list_tasks(benchmark="vtab1k")
    results = {}
    for name in names:
        try:
            results[name] = f"ok: {prepare_task(name, out, **kwargs)}"
        except PrepareError as e:
            log.error("%s", e)
            results[name] = f"error: {e}"
    return results


__all__ = ["PrepareError", "derive_image", "derive_label", "prepare_task", "prepare_tasks"]
