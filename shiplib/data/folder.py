"""Read the NOAH/SHIP image-folder layout shared by VTAB-1k and mini-VTAB.

    <root>/<task>/{train800,val200,train800val200,test}.txt
    <root>/<task>/images/<split>/NNNNNN.<ext>

Each list line is `<image path relative to the task folder> <integer label>`; a line may point into another
split's image folder and images may have any extension PIL reads.

Root resolution: the `root` argument if given (only that folder is searched); else `$SHIPLIB_DATA`, then the
benchmark's default folder in the repository (`data/vtab-1k` for VTAB-1k, `data/mini-vtab` for mini-VTAB).
Inside a root the canonical task folder is tried first, then folder-like aliases (`cifar/` for cifar100,
`Natural/CIFAR100/` in SPT's layout, ...).
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from .tasks import TaskSpec, get_task
from .transforms import build_transform, preset_record

log = logging.getLogger(__name__)

SPLITS = ("train800", "val200", "train800val200", "test")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ROOTS = {"vtab1k": REPO_ROOT / "data" / "vtab-1k", "mini": REPO_ROOT / "data" / "mini-vtab"}
ENV_ROOT = "SHIPLIB_DATA"
# Aliases that can be folder names on disk (VPT's `vtab-...(...)` strings cannot).
_FOLDER_LIKE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_alias_logged: set[Path] = set()


def candidate_roots(benchmark: str, root: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The folders searched for a benchmark's tasks, each with where it came from."""
    if root is not None:
        return [(Path(root).expanduser(), "root argument")]
    found = []
    if os.environ.get(ENV_ROOT):
        found.append((Path(os.environ[ENV_ROOT]).expanduser(), f"${ENV_ROOT}"))
    if benchmark in DEFAULT_ROOTS:
        found.append((DEFAULT_ROOTS[benchmark], "default"))
    return found


def _folder_names(spec: TaskSpec) -> list[str]:
    return [spec.name] + [a for a in spec.aliases if _FOLDER_LIKE.match(a) and not a.startswith("vtab-")]


def find_task_dir(task: str, root: str | os.PathLike | None = None) -> Path | None:
    """The task's folder, or None when it is not on disk (see `resolve_task_dir`)."""
    spec = get_task(task)
    for base, _ in candidate_roots(spec.benchmark, root):
        for name in _folder_names(spec):
            d = base / name
            if d.is_dir():
                if name != spec.name and d not in _alias_logged:
                    _alias_logged.add(d)
                    log.warning("task %s: using folder %s (alias %r of the canonical folder name %r)",
                                spec.name, d, name, spec.name)
                return d
    return None


def prepare_hint(spec: TaskSpec, out: Path | None = None) -> str:
    """How to create a task's folder."""
    if spec.benchmark == "mini":
        out = out or DEFAULT_ROOTS["mini"]
        return f"build it with `python -m shiplib.data build-mini --out {out} --task {spec.name}`"
    out = out or DEFAULT_ROOTS.get(spec.benchmark, Path("data/vtab-1k"))
    return f"prepare it with `python -m shiplib.data prepare --task {spec.name} --out {out}`"


def resolve_task_dir(task: str, root: str | os.PathLike | None = None) -> Path:
    """The folder holding `<task>/{train800,...}.txt`; fails at once, saying how to create it, if absent."""
    spec = get_task(task)
    d = find_task_dir(spec.name, root)
    if d is not None:
        return d
    roots = candidate_roots(spec.benchmark, root)
    where = "; ".join(f"{p} ({src})" for p, src in roots) or "nowhere (no root given)"
    names = ", ".join(f"{n}/" for n in _folder_names(spec))
    hint = prepare_hint(spec, roots[0][0] if roots else None)
    raise FileNotFoundError(
        f"{spec.benchmark} task {spec.name!r} not found: looked for {names} in {where}. "
        f"{hint[0].upper()}{hint[1:]}, or set ${ENV_ROOT} "
        f"(or pass root=...) to the folder that holds {spec.name}/train800.txt.")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def read_split_list(task_dir: str | os.PathLike, split: str, num_classes: int | None = None) -> list[tuple[Path, int]]:
    """Parse `<task_dir>/<split>.txt` into (absolute image path, label) pairs, validating every line.

    Labels must lie in [0, num_classes); when `num_classes` is None it is taken from the task named by the
    folder (canonical name or alias). Every listed image must exist.
    """
    _check_split(split)
    task_dir = Path(task_dir)
    if num_classes is None:
        try:
            num_classes = get_task(task_dir.name).num_classes
        except KeyError as e:
            raise ValueError(f"cannot tell the number of classes: folder name {task_dir.name!r} is not a known "
                             f"task; pass num_classes=...") from e
    list_file = task_dir / f"{split}.txt"
    if not list_file.is_file():
        present = sorted(p.name for p in task_dir.glob("*.txt")) if task_dir.is_dir() else []
        raise FileNotFoundError(f"split list {list_file} is missing (the folder has: {present or 'no lists'})")
    samples: list[tuple[Path, int]] = []
    for lineno, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{list_file}, line {lineno}"
        if len(fields) != 2:
            raise ValueError(f"{where}: expected '<relative image path> <label>' (paths without spaces), "
                             f"got {line!r}")
        rel, label_text = fields
        try:
            label = int(label_text)
        except ValueError:
            raise ValueError(f"{where}: label {label_text!r} is not an integer") from None
        if not 0 <= label < num_classes:
            raise ValueError(f"{where}: label {label} is out of range for {num_classes} classes "
                             f"(valid 0..{num_classes - 1})")
        samples.append((task_dir / rel, label))
    if not samples:
        raise ValueError(f"split list {list_file} is empty")
    missing = [str(p) for p, _ in samples if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image file(s) listed in {list_file} are missing, "
                                f"e.g. {', '.join(missing[:3])}")
    return samples


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image file as RGB; a missing or corrupt file fails naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")  # convert() forces the full decode inside the try
    except FileNotFoundError:
        raise FileNotFoundError(f"image file is missing: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise OSError(f"cannot decode image file {path}: {e}") from e


class VtabFolderDataset(Dataset):
    """One split of a task in the shared folder layout; items are `(transform(RGB PIL image), label)`.

    `cache=True` keeps decoded images in memory (a VTAB-1k train set is 1,000 images; at native size that is
    ~0.2 GB for dmlab and ~1.4 GB for KITTI, so it is opt-in).
    """

    def __init__(self, task: str, split: str, root: str | os.PathLike | None = None, transform=None,
                 cache: bool = False):
        _check_split(split)
        self.task: TaskSpec = get_task(task)
        self.split = split
        self.task_dir = resolve_task_dir(self.task.name, root)
        self.samples = read_split_list(self.task_dir, split, num_classes=self.task.num_classes)
        self.targets = [label for _, label in self.samples]
        self.transform = transform
        self.cache = cache
        self.preprocessing: dict | None = None  # set by build_dataset
        self._images: dict[int, Image.Image] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> Image.Image:
        if index in self._images:
            return self._images[index]
        img = open_rgb(self.samples[index][0])
        if self.cache:
            self._images[index] = img
        return img

    def __getitem__(self, index: int):
        img = self.load_image(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]

    def __repr__(self) -> str:
        return f"VtabFolderDataset(task={self.task.name!r}, split={self.split!r}, n={len(self)}, dir={self.task_dir})"


def build_dataset(task: str, split: str, root: str | os.PathLike | None = None, preset: str = "ship",
                  img_size: int = 224, cache: bool = False) -> VtabFolderDataset:
    """A split with a preprocessing preset applied; `.preprocessing` records the preset."""
    ds = VtabFolderDataset(task, split, root=root, transform=build_transform(preset, img_size), cache=cache)
    ds.preprocessing = preset_record(preset, img_size)
    return ds


def expected_split_sizes(spec: TaskSpec) -> dict[str, tuple[int, ...]]:
    """The accepted example counts per split (empty tuple: not known)."""
    if "split_sizes" in spec.meta:
        return {s: (int(n),) for s, n in spec.meta["split_sizes"].items()}
    sizes: dict[str, tuple[int, ...]] = {}
    if spec.benchmark == "vtab1k":
        sizes = {"train800": (800,), "val200": (200,), "train800val200": (1000,)}
    if spec.test_size:
        sizes["test"] = tuple(spec.meta.get("accepted_test_sizes", (spec.test_size,)))
    return sizes


def check_task_dir(task: str, root: str | os.PathLike | None = None, max_images: int | None = None,
                   progress: bool = True) -> dict:
    """Validate a prepared task folder: list files, labels, counts, train800val200 = train800 + val200 labels,
    and that images decode (all of them, or the first `max_images` per split). Returns a report dict whose
    `problems` list is empty when the folder is fine."""
    from ..utils.progress import progress_bar

    spec = get_task(task)
    task_dir = resolve_task_dir(spec.name, root)
    expected = expected_split_sizes(spec)
    report: dict = {"task": spec.name, "dir": str(task_dir), "counts": {}, "problems": []}
    record_file = task_dir / "prepare.json"
    if record_file.is_file():
        rec = json.loads(record_file.read_text(encoding="utf-8"))
        report["prepared"] = (f"TFDS {rec.get('tfds_name')}:{rec.get('tfds_version')} on {rec.get('created')}"
                              + ("" if rec.get("vtab_sizes", True) else " with NON-VTAB split sizes (a test build)"))
    labels: dict[str, list[int]] = {}
    for split in SPLITS:
        try:
            samples = read_split_list(task_dir, split, num_classes=spec.num_classes)
        except (OSError, ValueError) as e:
            report["problems"].append(str(e))
            continue
        labels[split] = [lab for _, lab in samples]
        report["counts"][split] = len(samples)
        if expected.get(split) and len(samples) not in expected[split]:
            accepted = " or ".join(map(str, expected[split]))
            report["problems"].append(f"{split}: {len(samples)} examples, expected {accepted}")
        to_open = samples if max_images is None else samples[:max_images]
        for path, _ in progress_bar(to_open, desc=f"{spec.name}/{split}", disable=not progress, leave=False):
            try:
                open_rgb(path)
            except OSError as e:
                report["problems"].append(str(e))
    if all(s in labels for s in ("train800", "val200", "train800val200")):
        if labels["train800val200"] != labels["train800"] + labels["val200"]:
            report["problems"].append("train800val200 labels are not train800 followed by val200")
    return report
