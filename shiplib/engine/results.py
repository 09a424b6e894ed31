"""Where results and working files live, atomic result files, and loading results into a DataFrame.

Layout (protocol "final", the default):  <results>/<benchmark>/<task>/<run>/seed<k>.json
          protocol "tune" (val200 model selection): <results>/tune/<benchmark>/<task>/<run>/seed<k>.json
Working files (checkpoint, epoch log) mirror it under <runs>/…/seed<k>/.
<run> is the method name, or "<method>+<tag>" for a named variant (e.g. an lr sweep).
A result file that cannot be read or holds an impossible result (truncated, not a JSON object, keys missing, another
schema version, an accuracy that is not a finite percentage, a history that does not match its epochs) is not a
finished run: `read_result` names it (`UnreadableResultError`); a run about to train moves it aside to
`<file>.corrupt` (`check_result(..., move_unreadable=True)`).
A run's result is written by `commit_result`, which never replaces a result another run wrote meanwhile.
Whether a run is done is decided here, once: `check_result` gives the `RunState` of a result file for a run identity
(done, stale, conflict, corrupt or missing); the launchers add the states only a lock or a job can tell.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ..backbones.fingerprint import current_fingerprint
from ..errors import ConfigError, ShiplibError, StateError, setting_fix
from ..utils.io import CORRUPT_SUFFIX, aside_path, atomic_write_json, move_aside, remove_stale_temporaries

log = logging.getLogger(__name__)

RESULT_SCHEMA = 1
PROTOCOLS = ("final", "tune")
#: A tag is one folder name inside the results tree: it cannot hold '/', start with '.' or be empty.
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")
_TAG_MAX = 100
#: Keys without which a result file is not a finished run (what reuse, status and the tables rely on).
RESULT_KEYS = ("identity", "acc_last", "acc_max_over_epochs")


class UnreadableResultError(StateError):
    """A result file that is not a complete, possible result (truncated JSON, not an object, keys missing, impossible
    values)."""

    def __init__(self, path: os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"result file {self.path} cannot be read: {reason}. It is not a finished run: delete it, "
                         f"or let `python -m shiplib run`/`sweep` move it aside to {self.path.name}{CORRUPT_SUFFIX} "
                         "and run the cell again.")


def check_tag(tag: str | None) -> str | None:
    """A tag names a variant's folder (`<method>+<tag>`); anything that could leave the results tree is refused."""
    if tag is None:
        return tag
    text = str(tag)
    if not isinstance(tag, str) or not _TAG.match(text) or len(text) > _TAG_MAX:
        why = ("is empty" if not text else f"is longer than {_TAG_MAX} characters" if len(text) > _TAG_MAX
               else "must start with a letter or digit" if not text[0].isalnum()
               else f"holds {sorted(set(c for c in text if not re.match(r'[A-Za-z0-9._=+-]', c)))!r}")
        raise ConfigError(f"tag {tag!r} {why}: a tag is one folder name under the results folder, made of "
                          "letters, digits and . _ = + - (starting with a letter or digit), e.g. --tag lr5e-4")
    return tag


def run_name(method: str, tag: str | None = None) -> str:
    return method if not check_tag(tag) else f"{method}+{tag}"


def _relative(benchmark: str, task: str, run: str, protocol: str) -> Path:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    method, _, tag = str(run).partition("+")
    rel = Path(benchmark) / task / run_name(method, tag or None)  # a tag is checked: it is a folder name
    return Path("tune") / rel if protocol == "tune" else rel


def result_path(results_dir, benchmark: str, task: str, run: str, seed: int, protocol: str = "final") -> Path:
    """`run`: the method name, or `run_name(method, tag)` for a tagged variant."""
    return Path(results_dir) / _relative(benchmark, task, run, protocol) / f"seed{seed}.json"


def work_dir(runs_dir, benchmark: str, task: str, run: str, seed: int, protocol: str = "final") -> Path:
    """`run`: the method name, or `run_name(method, tag)` for a tagged variant."""
    return Path(runs_dir) / _relative(benchmark, task, run, protocol) / f"seed{seed}"


def write_result(path, result: dict) -> Path:
    """Write atomically: a reader sees the old file or the complete new one, never a partial file."""
    return atomic_write_json(path, {"schema": RESULT_SCHEMA, **result})


def file_state(path) -> str | None:
    """A digest of the file at `path` (None when there is none): what a run saw there when it started."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def commit_result(path, result: dict, seen_at_start: str | None, wait_s: float = 60.0) -> Path:
    """Write a run's result, unless another run finished one of another identity at `path` since this run started
    (`seen_at_start`, from `file_state`): that result is kept and this run is refused (`ResultConflictError`, naming
    both runs). One of the same identity is the same run (same numbers), so it is replaced. The check and the write
    happen under a lock next to the result, so two writers never interleave."""
    from ..launch.locks import hold

    path = Path(path)
    with hold(path.parent, f".{path.name}.lock", wait_s):
        remove_stale_temporaries(path.parent, path.name)  # under the lock no one else is writing this result
        if file_state(path) != seen_at_start:
            try:
                other = read_result(path)
            except (FileNotFoundError, UnreadableResultError):
                other = None  # removed, or not a result: nothing finished is lost by writing ours
            if other is not None and other.get("identity") != result.get("identity"):
                raise ResultConflictError(path, other, result)
        return write_result(path, result)


class ResultConflictError(StateError):
    """Another run wrote a finished result at the same path while this one trained; it is kept."""

    def __init__(self, path: Path, other: dict, mine: dict):
        def who(r: dict) -> str:
            cfg = r.get("config") or {}
            return f"runs folder {cfg.get('runs_dir')!r}, started {r.get('started_at')}"

        from .resolved import identity_diff

        differs = identity_diff(other.get("identity") or {}, mine.get("identity") or {})
        super().__init__(f"{path} was written by another run ({who(other)}) while this run ({who(mine)}) trained, "
                         f"with other settings ({differs}); it was kept and this run's result was not written. Name "
                         f"one variant with {setting_fix('tag', 'e2', flag='--tag')}, or give each its own results "
                         "folder (--results DIR; in a notebook: results_dir=\"DIR\").")


def _result_problem(result) -> str | None:
    """Why a parsed result file is not a usable result, or None."""
    if not isinstance(result, dict):
        return f"it holds a JSON {type(result).__name__}, not an object"
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        return f"key(s) {', '.join(missing)} missing"
    if not isinstance(result["identity"], dict):
        return f"its identity is a {type(result['identity']).__name__}, not an object"
    if result.get("schema") != RESULT_SCHEMA:
        return f"its schema version is {result.get('schema')!r}, not {RESULT_SCHEMA} (written by another shiplib?)"
    for key in ("acc_last", "acc_max_over_epochs"):
        problem = _accuracy_problem(key, result[key])
        if problem:
            return problem
    return _history_problem(result)


def _accuracy_problem(key: str, value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{key} is {value!r}, not a number"
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        return f"{key} is {value!r}, not a percentage in [0, 100]"
    return None


def _history_problem(result: dict) -> str | None:
    """The epoch history, when recorded, holds epochs 0..epochs-1 once each and ends with acc_last."""
    history = result.get("history")
    if history is None:
        return None
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        return "its history is not a list of epoch records"
    epochs = [h.get("epoch") for h in history]
    if "epochs" in result and epochs != list(range(result["epochs"])):
        shown = epochs if len(epochs) <= 6 else epochs[:3] + ["…"] + epochs[-2:]
        return f"its history holds epochs {shown}, not 0..{result['epochs'] - 1}"
    for h in history:
        if h.get("eval_acc") is not None:
            problem = _accuracy_problem(f"eval_acc of epoch {h.get('epoch')}", h["eval_acc"])
            if problem:
                return problem
    if history and history[-1].get("eval_acc") != result["acc_last"]:
        return f"acc_last {result['acc_last']!r} is not the last epoch's accuracy {history[-1].get('eval_acc')!r}"
    return None


def read_result(path) -> dict:
    """A result file's content; `UnreadableResultError` (naming the file and why) when it is not a complete result.
    A missing file raises FileNotFoundError as usual."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UnreadableResultError(path, f"it is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        result = json.loads(text)
    except json.JSONDecodeError as e:
        what = "it is empty" if not text.strip() else \
            f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg} (a truncated file?)"
        raise UnreadableResultError(path, what) from None
    problem = _result_problem(result)
    if problem:
        raise UnreadableResultError(path, problem)
    return result


_COLUMNS = ("benchmark", "task", "group", "method", "tag", "seed", "protocol", "eval_split", "acc_last",
            "acc_max_over_epochs", "max_epoch", "epochs", "wall_time_s", "device")


def result_row(result: dict, path=None) -> dict:
    """One flat row of a result: identity, accuracies (%), main hyperparameters, parameter counts, levels."""
    row = {k: result.get(k) for k in _COLUMNS}
    cfg = result.get("config", {})
    for key in ("lr", "weight_decay", "backbone", "img_size", "batch_size"):
        row[key] = cfg.get(key)
    for key, value in (cfg.get("options") or {}).items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            row[f"opt.{key}"] = value
    for key, value in (result.get("parameters") or {}).items():
        row[f"params.{key}"] = value
    levels = (result.get("hierarchy") or {}).get("levels")
    row["n_levels"] = len(levels) if levels is not None else None  # semantic levels the run's model used
    row["path"] = None if path is None else str(path)
    return row


def find_result_files(results_dir="results") -> list[Path]:
    root = Path(results_dir)
    return sorted(p for p in root.rglob("seed*.json") if p.is_file()) if root.is_dir() else []


def load_results(results_dir="results", protocol: str | None = None, benchmark: str | None = None):
    """All result files under `results_dir` as a pandas DataFrame (one row per run).

    Accuracies are in %; `acc_last` is the last-epoch accuracy (the main number), `acc_max_over_epochs`
    the best over the evaluated epochs (SHIP's reporting protocol, selected on the evaluation split).
    """
    import pandas as pd  # deferred: a run needs no pandas; only reading results into a table does

    rows = []
    for path in find_result_files(results_dir):
        try:
            result = read_result(path)
        except UnreadableResultError as e:
            log.warning("skipped: %s", e)
            continue
        if protocol is not None and result.get("protocol") != protocol:
            continue
        if benchmark is not None and result.get("benchmark") != benchmark:
            continue
        rows.append(result_row(result, path))
    return pd.DataFrame(rows, columns=None if rows else list(_COLUMNS) + ["path"])


class RunState(str, Enum):
    """The state of a run (a sweep cell). Declared in the order `status` counts them."""

    DONE = "done"  # a current result
    RUNNING = "running"  # a live lock
    QUEUED = "queued"  # a SLURM job that will run it is pending
    FAILED = "failed"  # failed.json, a job that ended without a result, or a lock whose owner died
    MISSING = "pending"  # no result (shown as "pending": nothing stands in its way)
    STALE = "stale"  # a result made with other backbone weights: run again
    CONFLICT = "conflict"  # a result of other settings at the same path: needs force or a tag
    CORRUPT = "corrupt"  # a result file that cannot be read: running the cell moves it aside

    def __str__(self) -> str:
        return self.value

    @property
    def elsewhere(self) -> bool:
        """Another process or job is on it."""
        return self in (RunState.RUNNING, RunState.QUEUED)

    @property
    def to_run(self) -> bool:
        """A sweep runs it without being forced."""
        return self in (RunState.MISSING, RunState.FAILED, RunState.STALE, RunState.CORRUPT)


@dataclass(frozen=True)
class ResultCheck:
    """What a run finds at its result path: DONE, STALE, CONFLICT, CORRUPT or MISSING."""

    state: RunState
    detail: str = ""
    result: dict | None = None  # the parsed result, when there is one
    error: BaseException | None = None  # why a CORRUPT file cannot be read


def stale_backbone(result: dict) -> str | None:
    """Why a finished result no longer matches its backbone's current weights, or None if it does."""
    ident = result.get("identity", {})
    made_with = (result.get("backbone") or {}).get("sha256")
    now = current_fingerprint(ident.get("backbone"), ident.get("pretrained", True), ident.get("backbone_arch"))
    if made_with and now and made_with != now:
        return f"it was made with other {ident.get('backbone')!r} backbone weights (sha256 {made_with[:12]}…, " \
               f"now {now[:12]}…)"
    return None


def check_result(path, identity: dict, move_unreadable: bool = False) -> ResultCheck:
    """The state of the result at `path` for the run `identity`: the one answer to "is this run done?".

    `move_unreadable`: an unreadable file is moved aside (`<file>.corrupt`) and the run is MISSING (what a run
    does before training); a file that cannot be opened at all is then raised, not moved."""
    path = Path(path)
    if not path.is_file():
        return ResultCheck(RunState.MISSING)
    try:
        result = read_result(path)
    except UnreadableResultError as e:
        if move_unreadable:
            move_aside(path, e.reason)
            return ResultCheck(RunState.MISSING)
        return ResultCheck(RunState.CORRUPT, f"unreadable result: {e.reason}; running the cell moves it to "
                                             f"{aside_path(path).name} and runs it again", error=e)
    except OSError as e:
        if move_unreadable:
            raise
        return ResultCheck(RunState.CORRUPT, f"result file cannot be opened: {e}", error=e)
    if result.get("identity") != identity:
        from .resolved import identity_diff

        return ResultCheck(RunState.CONFLICT, "a result of other settings: "
                           f"{identity_diff(result.get('identity', {}), identity)} (use --tag, or --force)", result)
    try:
        reason = stale_backbone(result)
    except (ShiplibError, OSError) as e:  # e.g. the backbone weights file is unreadable now
        reason = f"cannot compare with the current backbone weights: {e}"
    if reason is not None:
        return ResultCheck(RunState.STALE, reason, result)
    return ResultCheck(RunState.DONE, str(path), result)


def is_finished(path: os.PathLike, identity: dict) -> bool:
    """True if a result exists at `path` for exactly this run identity and the backbone's current weights.
    An unreadable result file is not finished (a warning names it; running the cell moves it aside)."""
    check = check_result(path, identity)
    if isinstance(check.error, UnreadableResultError):
        log.warning("%s", check.error)
    return check.state is RunState.DONE
