"""Read the NOAH/SHIP image-folder layout shared by VTAB-1k and mini-VTAB.

    <root>/<task>/{train800,val200,train800val200,test}.txt
    <root>/<task>/images/<split>/NNNNNN.<ext>

Each list line is `<image path relative to the task folder> <integer label>`; a line may point into another
split's image folder and images may have any extension PIL reads.

Root resolution: the `root` argument if given (only that folder is searched); else `$SHIPLIB_DATA` (which must
name an existing folder), then the benchmark's default folder in the project (`data/vtab-1k` for VTAB-1k,
`data/mini-vtab` for mini-VTAB, under `shiplib.utils.paths.project_root()`).
Inside a root the canonical task folder is tried first, then folder-like aliases (`cifar/` for cifar100,
`Natural/CIFAR100/` in SPT's layout, ...).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError, MissingDataError
from ..utils.paths import ProjectRootError, project_root
from .checks import DECODE_ERRORS, check_split, check_split_name, check_task_folder, checked_samples
from .image_cache import MEMORY_BYTES, DecodedImages, Normalize, cache_key
from .images import to_rgb
from .tasks import TaskSpec, get_task
from .transforms import DEFAULT_PRESET, PRESETS, build_transform, preset_record, resize_transform

log = logging.getLogger(__name__)

#: Each benchmark's default root, relative to the project folder.
DEFAULT_FOLDERS = {"vtab1k": Path("data") / "vtab-1k", "mini": Path("data") / "mini-vtab"}
ENV_ROOT = "SHIPLIB_DATA"
# Aliases that can be folder names on disk (VPT's `vtab-...(...)` strings cannot).
_FOLDER_LIKE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_alias_logged: set[Path] = set()


@dataclass(frozen=True)
class TaskLocation:
    """Where a task's folder was found: the root searched, the task folder inside it, and where the root came from."""

    root: Path
    task_dir: Path
    source: str  # "root argument", "$SHIPLIB_DATA" or "default"


def default_root(benchmark: str, home: str | os.PathLike | None = None) -> Path:
    """The benchmark's folder in the project (`<project>/data/vtab-1k`, `<project>/data/mini-vtab`).

    Fails (`ProjectRootError`, saying where it looked) when the project folder cannot be found."""
    if benchmark not in DEFAULT_FOLDERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; valid: {', '.join(DEFAULT_FOLDERS)}")
    return project_root(home) / DEFAULT_FOLDERS[benchmark]


def env_root() -> Path | None:
    """`$SHIPLIB_DATA` as a folder, None when unset; a value that is not an existing folder is an error."""
    value = os.environ.get(ENV_ROOT)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise NotADirectoryError(f"${ENV_ROOT} is {value!r}, which {what}. Point ${ENV_ROOT} to the folder that "
                                 f"holds <task>/train800.txt, or unset it to use the project's data/ folder.")
    return path


def candidate_roots(benchmark: str, root: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The folders searched for a benchmark's tasks, each with where it came from.

    The default folder is left out when the project folder cannot be found (`resolve_task_dir` then says why)."""
    if root is not None:
        return [(Path(root).expanduser(), "root argument")]
    found = []
    env = env_root()
    if env is not None:
        found.append((env, f"${ENV_ROOT}"))
    if benchmark in DEFAULT_FOLDERS:
        try:
            found.append((default_root(benchmark), "default"))
        except ProjectRootError:
            pass
    return found


def _folder_names(spec: TaskSpec) -> list[str]:
    return [spec.name] + [a for a in spec.aliases if _FOLDER_LIKE.match(a) and not a.startswith("vtab-")]


def _find(spec: TaskSpec, root: str | os.PathLike | None) -> TaskLocation | None:
    for base, source in candidate_roots(spec.benchmark, root):
        for name in _folder_names(spec):
            d = base / name
            if d.is_dir():
                if name != spec.name and d not in _alias_logged:
                    _alias_logged.add(d)
                    log.warning("task %s: using folder %s (alias %r of the canonical folder name %r)",
                                spec.name, d, name, spec.name)
                return TaskLocation(root=base, task_dir=d, source=source)
    return None


def find_task_dir(task: str, root: str | os.PathLike | None = None) -> Path | None:
    """The task's folder, or None when it is not on disk (see `resolve_task_dir`)."""
    found = _find(get_task(task), root)
    return None if found is None else found.task_dir


def prepare_hint(spec: TaskSpec, out: Path | None = None) -> str:
    """How to create a task's folder."""
    out = out or DEFAULT_FOLDERS.get(spec.benchmark, DEFAULT_FOLDERS["vtab1k"])
    if spec.benchmark == "mini":
        return f"build it with `python -m shiplib.data build-mini --out {out} --task {spec.name}`"
    return f"prepare it with `python -m shiplib.data prepare --task {spec.name} --out {out}`"


def locate_task(task: str, root: str | os.PathLike | None = None) -> TaskLocation:
    """Where `<task>/{train800,...}.txt` is; fails at once, saying where it looked and how to create it."""
    spec = get_task(task)
    found = _find(spec, root)
    if found is not None:
        return found
    roots = candidate_roots(spec.benchmark, root)
    where = "; ".join(f"{p} ({src})" for p, src in roots) or "no folder"
    unknown_default = ""
    if root is None and spec.benchmark in DEFAULT_FOLDERS and all(src != "default" for _, src in roots):
        try:
            default_root(spec.benchmark)
        except ProjectRootError as e:
            unknown_default = f" The default folder is unknown: {e}"
    names = ", ".join(f"{n}/" for n in _folder_names(spec))
    hint = prepare_hint(spec, roots[0][0] if roots else None)
    raise MissingDataError(
        f"{spec.benchmark} task {spec.name!r} not found: looked for {names} in {where}.{unknown_default} "
        f"{hint[0].upper()}{hint[1:]}, or name the folder that holds {spec.name}/train800.txt: --data-root DIR "
        f"(in a notebook: data_root=\"DIR\"; papermill: -p data_root DIR; in code: root=DIR) or ${ENV_ROOT}=DIR.")


def resolve_task_dir(task: str, root: str | os.PathLike | None = None) -> Path:
    """The folder holding `<task>/{train800,...}.txt`; fails at once, saying how to create it, if absent."""
    return locate_task(task, root).task_dir


def read_split_list(task_dir: str | os.PathLike, split: str, num_classes: int | None = None) -> list[tuple[Path, int]]:
    """`<task_dir>/<split>.txt` as (absolute image path, label) pairs, every line checked (`checks.check_split`:
    a `DataError` naming each bad line, a missing or empty list, a missing image).

    Labels must lie in [0, num_classes); when `num_classes` is None it is taken from the task named by the
    folder (canonical name or alias).
    """
    check_split_name(split)
    return check_split(task_dir, split, _num_classes(Path(task_dir), num_classes))


def _num_classes(task_dir: Path, num_classes: int | None) -> int:
    if num_classes is not None:
        return num_classes
    try:
        return get_task(task_dir.name).num_classes
    except KeyError as e:
        raise DataError(f"cannot tell the number of classes: folder name {task_dir.name!r} is not a known "
                        f"task; pass num_classes=...") from e


def open_rgb(path: str | os.PathLike, listed_in: str | None = None, check_command: str | None = None) -> Image.Image:
    """Decode an image file as RGB; a missing or corrupt file is a `DataError` naming it (and `listed_in`, the
    line of the list file that names it, and `check_command`, the command that lists every such file, when
    known)."""
    where = f" ({listed_in})" if listed_in else ""
    fix = "replace it or rebuild the task folder" + (f"; `{check_command}` lists every bad image" if check_command
                                                     else "")
    try:
        with Image.open(path) as im:
            return to_rgb(im)  # forces the full decode inside the try; 16-bit images keep their range
    except FileNotFoundError:
        raise DataError(f"image file {path}{where} is missing: {fix}") from None
    except DECODE_ERRORS as e:
        raise DataError(f"image file {path}{where} cannot be decoded ({e}): {fix}") from e


class VtabFolderDataset(Dataset):
    """One split of a task in the shared folder layout; items are `(transform(RGB PIL image), label)`.

    With a decoded-image cache attached (`build_dataset(cache=True)`), items come from the cache instead: the
    same tensors, without decoding; `uint8=True` yields the cached uint8 images, for normalising whole batches on
    the device with `.normalize`.
    """

    def __init__(self, task: str, split: str, root: str | os.PathLike | None = None, transform=None):
        check_split_name(split)
        self.task: TaskSpec = get_task(task)
        self.split = split
        self.task_dir = resolve_task_dir(self.task.name, root)
        checked = checked_samples(self.task_dir, split, num_classes=self.task.num_classes)
        self.samples = [(s.path, s.label) for s in checked]
        self._lines = [s.line for s in checked]  # each image's line in the list file, for error messages
        self.targets = [label for _, label in self.samples]
        self.transform = transform
        self.preprocessing: dict | None = None  # set by build_dataset
        self.decoded: DecodedImages | None = None  # the decoded-image cache, when attached
        self.normalize: Normalize | None = None
        self.uint8 = False

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> Image.Image:
        return open_rgb(self.samples[index][0], listed_in=f"line {self._lines[index]} of {self.split}.txt",
                        check_command=f"python -m shiplib.data check --task {self.task.name} --root "
                                      f"{self.task_dir.parent}")

    def attach_cache(self, preset: str, img_size: int, folder: str | os.PathLike | None = None,
                     memory_bytes: int = MEMORY_BYTES, progress: bool = False) -> bool:
        """Decode every image once into a `DecodedImages` cache (in memory, or memory-mapped in `folder` when it
        exceeds `memory_bytes`); False, and nothing attached, when it fits nowhere."""
        resize = resize_transform(preset, img_size)
        key = cache_key([p for p, _ in self.samples], preset, img_size)
        decoded = DecodedImages.build(len(self), lambda i: resize(self.load_image(i)), img_size, key, folder,
                                      memory_bytes, progress)
        if decoded is not None:
            self.decoded, self.normalize = decoded, Normalize(PRESETS[preset]["mean"], PRESETS[preset]["std"])
        return decoded is not None

    def __getitem__(self, index: int):
        if self.decoded is not None:
            img = self.decoded[index]
            return (img if self.uint8 else self.normalize(img)), self.targets[index]
        img = self.load_image(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]

    def __repr__(self) -> str:
        return f"VtabFolderDataset(task={self.task.name!r}, split={self.split!r}, n={len(self)}, dir={self.task_dir})"


def build_dataset(task: str, split: str, root: str | os.PathLike | None = None, preset: str = DEFAULT_PRESET,
                  img_size: int = 224, cache: bool = False, cache_dir: str | os.PathLike | None = None,
                  progress: bool = False) -> VtabFolderDataset:
    """A split with a preprocessing preset applied; `.preprocessing` records the preset.

    `cache`: decode the images once (`VtabFolderDataset.attach_cache`: in memory, or memory-mapped under
    `cache_dir` for a split that does not fit); the items are the same tensors."""
    ds = VtabFolderDataset(task, split, root=root, transform=build_transform(preset, img_size))
    ds.preprocessing = preset_record(preset, img_size)
    if cache:
        ds.attach_cache(preset, img_size, cache_dir, progress=progress)
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
    """Validate a prepared task folder (`checks.check_task_folder`): list files, labels, counts, train800val200 =
    train800 + val200 labels, and that images decode (all of them, or the first `max_images` per split). Returns a
    report dict whose `problems` list (`checks.Problem`s, each naming its file and line) is empty when the folder
    is fine."""
    spec = get_task(task)
    task_dir = resolve_task_dir(spec.name, root)
    return {"task": spec.name, **check_task_folder(task_dir, spec.num_classes, expected_split_sizes(spec),
                                                   max_images=max_images, progress=progress)}
