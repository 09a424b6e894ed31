"""The errors a user can act on. Each message says what is wrong, the value, the valid range or names, and how
to fix it, so the command line, the sweep and the notebooks show it as one clean message without a traceback.

    ShiplibError    base class; `exit_code` is what `python -m shiplib` exits with
    ConfigError     a run setting, method option, path or command-line option that cannot work   (exit 2)
    DataError       a task's data is missing or broken: list files, labels, images               (exit 2)
    MissingDataError  a task's folder or data file is not where the run looks (a FileNotFoundError) (exit 2)
    StateError      files left by earlier runs cannot be used: results, checkpoints, caches, locks (exit 1)
    ResourceError   the machine cannot do the run as asked: memory, devices, disk, time          (exit 1)

Each class also derives from the builtin a caller would have caught before (ValueError, RuntimeError), so code
written against those keeps working. Where the fix is a setting, the message gives it for the command line and for
the notebooks (`setting_fix`). The full traceback is shown with `--debug` or `SHIPLIB_DEBUG=1`.
"""
from __future__ import annotations

import errno
import json
import os

#: Set (to 1, true, yes or on) to see full tracebacks of ShiplibErrors in notebooks as well.
DEBUG_ENV = "SHIPLIB_DEBUG"
#: How a boolean environment variable says "off" (case-insensitive); anything else is "on".
FALSE_WORDS = ("", "0", "false", "no", "off", "n", "f")


def env_flag(name: str) -> bool:
    """A boolean environment variable: unset, empty, 0, false, no, off (any case) are false; anything else true."""
    return os.environ.get(name, "").strip().lower() not in FALSE_WORDS


def debug_enabled() -> bool:
    return env_flag(DEBUG_ENV)


#: What torch puts in the message of an error it re-raises from a DataLoader worker, before the worker's stack.
_WORKER_TRACEBACK = "Original Traceback (most recent call last)"


class ShiplibError(Exception):
    """A problem the user can fix; the message says how."""

    exit_code = 1

    def __str__(self) -> str:
        text = super().__str__()
        # Raised in a DataLoader worker, torch re-raises it as `type(e)(<worker's traceback and message>)`:
        # the message is what follows the last "<module>.<class>: " of that traceback.
        marker = f"{type(self).__module__}.{type(self).__qualname__}: "
        if _WORKER_TRACEBACK in text and marker in text:
            return text.rsplit(marker, 1)[1].rstrip()
        return text

    def one_line(self) -> str:
        """`<kind>: <message>` as the command line prints it (newlines of a long message kept)."""
        return f"{type(self).__name__}: {self}"

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing the traceback: a notebook shows the message, not the call stack.
        if debug_enabled():
            import traceback

            return traceback.format_exception(type(self), self, self.__traceback__)
        return [self.one_line()]


class ConfigError(ShiplibError, ValueError):
    """A run configuration, option or command line that cannot work."""

    exit_code = 2


class DataError(ShiplibError, ValueError):
    """A task's data is missing or broken (list files, labels, images)."""

    exit_code = 2


class MissingDataError(DataError, FileNotFoundError):
    """A task's folder or data file is not where the run looks; still a FileNotFoundError for callers that catch it."""


class StateError(ShiplibError, RuntimeError):
    """A file left by an earlier run (result, checkpoint, cache, lock) cannot be used as it is."""


class ResourceError(ShiplibError, RuntimeError):
    """The machine cannot do the run as asked (memory, device, disk, time)."""


def setting_fix(key: str, value, flag: str | None = None) -> str:
    """How to set one run setting on the command line, in a notebook and with papermill, e.g.
    `--set batch_size=32 (in a notebook: overrides={"batch_size": 32}; papermill: -p overrides 'batch_size=32')`.
    `flag`: the command line's own option for it, e.g. "--tag" (else `--set key=value`); with a bool value, the
    flag alone (e.g. "--fresh" for resume=False)."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    cli = (flag if isinstance(value, bool) else f"{flag} {text}") if flag else f"--set {key}={text}"
    literal = json.dumps(value) if isinstance(value, str) else repr(value)  # Python, with JSON's quotes
    return (f"{cli} (in a notebook: overrides={{{json.dumps(key)}: {literal}}}; "
            f"papermill: -p overrides '{key}={text}')")


def reported_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a command line or a sweep reports as one message instead of a traceback: ShiplibErrors
    (every user-facing error type of the package derives from it) and file-system errors (they name their path)."""
    return ShiplibError, OSError


def exit_code(error: BaseException) -> int:
    """2: the command cannot work as given (settings, options, paths, data); 1: it failed while working."""
    if isinstance(error, ShiplibError):
        return error.exit_code
    return 2 if isinstance(error, (FileNotFoundError, NotADirectoryError)) else 1


def message(error: BaseException) -> str:
    """The text shown for a reported error (with a hint where the builtin's own text has none)."""
    text = str(error)
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        text += " (the disk is full: free space there, or point --runs/--results to another disk)"
    elif isinstance(error, PermissionError):
        text += " (no permission: choose a folder you can write to, e.g. with --results/--runs)"
    return text


__all__ = ["ShiplibError", "ConfigError", "DataError", "MissingDataError", "StateError", "ResourceError",
           "DEBUG_ENV", "debug_enabled", "env_flag", "setting_fix", "reported_errors", "exit_code", "message"]
