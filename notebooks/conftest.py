"""Strict nbval runs each notebook as a fresh clone would: `vtab.ipynb` trains into `runs/notebook/`, and a result
left there by an earlier run (of the tests, or the user's own) would be reused, so the committed output (a training
run) would differ. The folder is moved aside for the session and put back after it, with the user's files as they
were; a session that crashed before putting it back is repaired by the next one."""
from __future__ import annotations

import shutil
from pathlib import Path

NOTEBOOK_RUNS = Path(__file__).resolve().parents[1] / "runs" / "notebook"
ASIDE = NOTEBOOK_RUNS.with_name(NOTEBOOK_RUNS.name + ".kept-during-tests")


def _restore() -> None:
    """The user's folder back in place; what the session wrote there is dropped."""
    if ASIDE.exists():
        shutil.rmtree(NOTEBOOK_RUNS, ignore_errors=True)
        ASIDE.rename(NOTEBOOK_RUNS)


def pytest_sessionstart(session) -> None:
    _restore()  # left by a session that crashed
    if NOTEBOOK_RUNS.exists():
        NOTEBOOK_RUNS.rename(ASIDE)


def pytest_sessionfinish(session, exitstatus) -> None:
    if ASIDE.exists():
        _restore()
    else:  # nothing of the user's: the session's own files go
        shutil.rmtree(NOTEBOOK_RUNS, ignore_errors=True)
