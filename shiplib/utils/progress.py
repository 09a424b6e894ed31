"""Progress bars that suit where the code runs.

- ``widgets``: live ipywidgets bars, in a notebook opened in JupyterLab (or Notebook 7);
- ``terminal``: tqdm's usual live bar on an interactive terminal;
- ``lines``: one plain line per step of an outer bar (an epoch, a task) and no inner bars, with no carriage
  returns or cursor moves: for papermill, nbval, CI and SLURM logs, whose saved text must stay readable;
- ``off``: nothing.

``auto`` (the default) picks ``widgets`` in a kernel that a Jupyter server started (it sets
``JPY_SESSION_NAME``; papermill and nbval do not) when ipywidgets is installed, ``terminal`` when stderr is a
terminal, else ``lines``. ``$SHIPLIB_PROGRESS`` overrides the choice.

Bars with ``leave=False`` are inner bars (batches, images): ``lines`` mode leaves them out.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator

from tqdm import std as _std

from ..errors import ConfigError

MODES = ("auto", "widgets", "terminal", "lines", "off")
ENV = "SHIPLIB_PROGRESS"
#: The shape of a ``lines`` bar; the part in brackets (times, rates, postfix) varies from run to run.
LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


def _in_kernel() -> bool:
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None else None
    return ip is not None and getattr(ip, "kernel", None) is not None


def _has_ipywidgets() -> bool:
    try:
        import ipywidgets  # noqa: F401  (an optional dependency: whether it is installed decides the mode)
    except ImportError:
        return False
    return True


def progress_mode() -> str:
    """The mode in force: ``$SHIPLIB_PROGRESS`` if set (and not ``auto``), else what suits this process."""
    mode = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ConfigError(f"${ENV}={os.environ[ENV]!r} is not a progress mode; valid: {', '.join(MODES)}. Set it to "
                          f"one of them or unset it (in a notebook: %env {ENV}=lines, then run the cell again)")
    if mode != "auto":
        return mode
    if _in_kernel():
        return "widgets" if os.environ.get("JPY_SESSION_NAME") and _has_ipywidgets() else "lines"
    return "terminal" if sys.stderr.isatty() else "lines"


class LineBar(_std.tqdm):
    """tqdm that prints a new line whenever the count changes, never rewriting a line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._printed_n: int | None = None
        kwargs.setdefault("file", sys.stdout)  # stderr renders as an error-coloured block in notebooks
        kwargs.update(mininterval=0, miniters=1, dynamic_ncols=False, ncols=None,
                      bar_format=kwargs.get("bar_format") or LINE_FORMAT)
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "" or self.n == self._printed_n:  # clearing, or only the postfix changed
            return True
        self._printed_n = self.n
        self.fp.write((msg if msg is not None else self.__str__()).strip() + "\n")
        self.fp.flush()
        return True

    def close(self) -> None:
        if self.disable:
            return
        if self.n != self._printed_n:
            self.display()
        # tqdm's own close would rewrite or clear the line (carriage return); a line bar only unregisters
        self.disable = True
        with self._lock:
            self._decr_instances(self)


@contextlib.contextmanager
def bars_off(off: bool = True) -> Iterator[None]:
    """No progress bar inside the block (when `off`): for code that draws its own bars but is asked for none."""
    if not off:
        yield
        return
    before = os.environ.get(ENV)
    os.environ[ENV] = "off"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def progress_bar(iterable=None, *, leave: bool = True, disable: bool | None = False, **kwargs: Any):
    """A tqdm bar in the mode in force (see the module docstring); same arguments as ``tqdm``.

    ``disable=None`` (tqdm: "off unless a terminal") counts as enabled: the mode already says where we are."""
    mode = progress_mode()
    if disable or mode == "off" or (mode == "lines" and not leave):
        return _std.tqdm(iterable, disable=True, **kwargs)
    if mode == "widgets":
        from tqdm.notebook import tqdm as notebook_tqdm  # deferred: it needs ipywidgets, present only in notebooks

        kwargs.pop("dynamic_ncols", None)
        return notebook_tqdm(iterable, leave=leave, **kwargs)
    if mode == "lines":
        return LineBar(iterable, leave=leave, **kwargs)
    return _std.tqdm(iterable, leave=leave, **kwargs)
