"""Checks of a task folder in the NOAH/SHIP layout that name every problem with its file and line.

Two depths:
- `check_split(task_dir, split, num_classes)`: cheap, before every run. The list file exists and is not empty,
  every line is `<image path> <integer label>`, labels lie in [0, num_classes), every image file exists and is
  not empty. Raises `DataError` listing the problems.
- `check_task_folder(...)` (`python -m shiplib.data check`): the same for every split, plus split sizes,
  train800val200 = train800 + val200, and that every image decodes.
Both refuse an evaluation split that holds training images (the same file, or identical bytes under another name:
found by comparing file sizes first, then content hashes of the few candidates) and name duplicated lines.

Decoding every image before each run would cost minutes on large test sets, so a run checks only the cheap part;
an image that fails to decode during a run is a `DataError` naming it (`decode_problem` gives the reason).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import DataError
from ..utils.progress import progress_bar
from .splits import SPLITS

#: How many problems a DataError message lists (the `data check` command lists them all).
SHOWN_PROBLEMS = 5


@dataclass(frozen=True)
class Problem:
    """One problem of a task folder: the file, the line of a list file (when it is about one), what is wrong."""

    file: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}, line {self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    line: int  # line of the list file that names it
    size: int = 0  # bytes, from the check's stat (candidates for identical content share it)


#: What PIL raises for a file that is not a decodable image (truncated, not an image, a decompression bomb).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def check_split_name(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split


def list_file(task_dir: str | os.PathLike, split: str) -> Path:
    return Path(task_dir) / f"{check_split_name(split)}.txt"


def parse_split_list(task_dir: str | os.PathLike, split: str, num_classes: int) -> tuple[list[Sample], list[Problem]]:
    """Every well-formed line of `<task_dir>/<split>.txt` as a Sample, and every problem (cheap: no decoding)."""
    task_dir, path = Path(task_dir), list_file(task_dir, split)
    if not path.is_file():
        present = sorted(p.name for p in task_dir.glob("*.txt")) if task_dir.is_dir() else []
        where = f"the folder has {', '.join(present)}" if present else \
            "the folder has no list files" if task_dir.is_dir() else f"{task_dir} does not exist"
        return [], [Problem(path, None, f"split list is missing ({where})")]
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        return [], [Problem(path, None, f"not UTF-8 text ({e.reason} at byte {e.start}); expected lines "
                                        "'<image path> <label>'")]
    except OSError as e:
        return [], [Problem(path, None, f"cannot be read: {e.strerror or e}")]
    samples, problems = [], []
    if text.startswith("\ufeff"):
        problems.append(Problem(path, 1, "the file starts with a UTF-8 byte-order mark (BOM), which becomes part of "
                                         "the first image path: save it as UTF-8 without BOM"))
        text = text[1:]
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            problems.append(Problem(path, lineno, f"expected '<image path> <label>' (paths without spaces), "
                                                  f"got {line.strip()!r}"))
            continue
        rel, label_text = fields
        try:
            label = int(label_text)
        except ValueError:
            problems.append(Problem(path, lineno, f"label {label_text!r} is not an integer"))
            continue
        if not 0 <= label < num_classes:
            problems.append(Problem(path, lineno, f"label {label} is out of range for {num_classes} classes "
                                                  f"(valid 0..{num_classes - 1})"))
            continue
        image = task_dir / rel
        try:
            size = image.stat().st_size
        except OSError as e:
            problems.append(Problem(path, lineno, _unreachable_image(image, e)))
            continue
        if size == 0:
            problems.append(Problem(path, lineno, f"image {image} is empty (0 bytes)"))
            continue
        samples.append(Sample(image, label, lineno, size))
    problems += duplicated_lines(path, samples)
    if not samples and not problems:
        problems.append(Problem(path, None, "split list is empty: expected one '<image path> <label>' line per "
                                            "image"))
    return samples, problems


def _unreachable_image(image: Path, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return f"image {image} is a symbolic link loop (a link that leads back to itself): replace it with the file"
    if image.is_symlink():
        return f"image {image} is a symbolic link to {os.readlink(image)}, which does not exist"
    if isinstance(error, FileNotFoundError):
        return f"image {image} is missing"
    return f"image {image} cannot be read ({error.strerror or error})"


def duplicated_lines(path: Path, samples: list[Sample]) -> list[Problem]:
    """One problem per image listed more than once in a split (it would count several times)."""
    lines = defaultdict(list)
    for s in samples:
        lines[s.path].append(s.line)
    return [Problem(path, where[0], f"image {image} is listed {len(where)} times (lines "
                                    f"{', '.join(map(str, where[:8]))}{' …' if len(where) > 8 else ''})")
            for image, where in lines.items() if len(where) > 1]


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def shared_images(train: list[Sample], evaluated: list[Sample]) -> list[tuple[Sample, Sample]]:
    """(evaluated sample, training sample) pairs holding the same image: the same file, or identical bytes. Only
    files whose size occurs in both lists are read."""
    by_size = defaultdict(list)
    for s in train:
        by_size[s.size].append(s)
    candidates = [s for s in evaluated if s.size in by_size]
    sizes = {s.size for s in candidates}
    by_digest = {}
    for s in (t for t in train if t.size in sizes):
        by_digest.setdefault((s.size, _digest(s.path)), s)
    pairs = []
    for s in candidates:
        twin = by_digest.get((s.size, _digest(s.path)))
        if twin is not None:
            pairs.append((s, twin))
    return pairs


def leakage_problems(task_dir: str | os.PathLike, train_split: str, eval_split: str, train: list[Sample],
                     evaluated: list[Sample]) -> list[Problem]:
    """One problem when the evaluation split holds images of the training split (its accuracy would be
    inflated), naming the first few and the count."""
    pairs = shared_images(train, evaluated)
    if not pairs:
        return []
    shown = "; ".join(f"line {e.line} ({e.path.name}) = {train_split}.txt line {t.line} ({t.path.name})"
                      for e, t in pairs[:3])
    return [Problem(list_file(task_dir, eval_split), pairs[0][0].line,
                    f"{len(pairs)} of its {len(evaluated)} images are also in {train_split} (same content): "
                    f"{shown}{' …' if len(pairs) > 3 else ''}. An evaluation split must not hold training images: "
                    "rebuild the split lists")]


def check_no_leakage(task_dir: str | os.PathLike, train_split: str, eval_split: str, train: list[Sample],
                     evaluated: list[Sample]) -> None:
    """`DataError` when the evaluation split holds training images (the pre-run check)."""
    problems = leakage_problems(task_dir, train_split, eval_split, train, evaluated)
    if problems:
        raise DataError(f"{problems[0]}")


def decode_problem(path: str | os.PathLike) -> str | None:
    """Why an image file does not decode (fully, as training reads it), or None when it does."""
    try:
        with Image.open(path) as im:
            im.load()
    except FileNotFoundError:
        return "the file is missing"
    except DECODE_ERRORS as e:
        return f"cannot be decoded ({e})"
    return None


def split_problems(task_dir: str | os.PathLike, split: str, num_classes: int, decode: bool = False,
                   max_images: int | None = None, progress: bool = False) -> tuple[list[Sample], list[Problem]]:
    """`parse_split_list`, plus (with `decode`) a full decode of every image, or of the first `max_images`."""
    samples, problems = parse_split_list(task_dir, split, num_classes)
    if decode:
        path = list_file(task_dir, split)
        to_open = samples if max_images is None else samples[:max_images]
        for s in progress_bar(to_open, desc=f"{Path(task_dir).name}/{split}", disable=not progress, leave=False):
            reason = decode_problem(s.path)
            if reason:
                problems.append(Problem(path, s.line, f"image {s.path} {reason}"))
    return samples, problems


def problems_text(problems: list[Problem], shown: int = SHOWN_PROBLEMS) -> str:
    lines = [f"  - {p}" for p in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"  … and {len(problems) - shown} more")
    return "\n".join(lines)


def check_split(task_dir: str | os.PathLike, split: str, num_classes: int,
                decode: bool = False) -> list[tuple[Path, int]]:
    """(image path, label) pairs of a split, or a `DataError` listing its problems with file and line."""
    return [(s.path, s.label) for s in checked_samples(task_dir, split, num_classes, decode=decode)]


def checked_samples(task_dir: str | os.PathLike, split: str, num_classes: int, decode: bool = False) -> list[Sample]:
    """`check_split` keeping each image's line of the list file (a dataset names it when the image fails later)."""
    samples, problems = split_problems(task_dir, split, num_classes, decode=decode)
    if problems:
        task_dir = Path(task_dir)
        raise DataError(
            f"split {split} of the task folder {task_dir} has {len(problems)} problem(s):\n"
            f"{problems_text(problems)}\n"
            f"Fix the list file or images (or rebuild the task folder); `python -m shiplib.data check --task "
            f"{task_dir.name} --root {task_dir.parent}` lists every problem.")
    return samples


def check_task_folder(task_dir: str | os.PathLike, num_classes: int, expected_sizes: dict | None = None,
                      decode: bool = True, max_images: int | None = None, progress: bool = False) -> dict:
    """Every split of a task folder: {"dir", "counts", "problems" (Problem list), "prepared" (when recorded)}.

    `expected_sizes`: {split: accepted example counts}; `decode`: open every image (or the first `max_images`
    per split)."""
    task_dir = Path(task_dir)
    report: dict = {"dir": str(task_dir), "counts": {}, "problems": []}
    record_file = task_dir / "prepare.json"
    if record_file.is_file():
        try:
            rec = json.loads(record_file.read_text(encoding="utf-8"))
            report["prepared"] = (f"TFDS {rec.get('tfds_name')}:{rec.get('tfds_version')} on {rec.get('created')}"
                                  + ("" if rec.get("vtab_sizes", True) else
                                     " with NON-VTAB split sizes (a test build)"))
        except (OSError, ValueError, AttributeError) as e:
            report["problems"].append(Problem(record_file, None, f"cannot be read ({e})"))
    labels: dict[str, list[int]] = {}
    samples_of: dict[str, list[Sample]] = {}
    for split in SPLITS:
        samples, problems = split_problems(task_dir, split, num_classes, decode=decode, max_images=max_images,
                                           progress=progress)
        report["problems"] += problems
        if not samples:
            continue
        samples_of[split] = samples
        report["counts"][split] = len(samples)
        if not any(p.line for p in problems):
            labels[split] = [s.label for s in samples]
        accepted = (expected_sizes or {}).get(split)
        if accepted and len(samples) not in accepted:
            report["problems"].append(Problem(list_file(task_dir, split), None,
                                              f"{len(samples)} examples, expected {' or '.join(map(str, accepted))}"))
    for train_split, eval_split in (("train800val200", "test"), ("train800", "val200")):
        if train_split in samples_of and eval_split in samples_of:
            report["problems"] += leakage_problems(task_dir, train_split, eval_split, samples_of[train_split],
                                                   samples_of[eval_split])
    if all(s in labels for s in ("train800", "val200", "train800val200")):
        if labels["train800val200"] != labels["train800"] + labels["val200"]:
            report["problems"].append(Problem(list_file(task_dir, "train800val200"), None,
                                              "its labels are not those of train800 followed by val200"))
    return report
