"""Where the project is, and paths written into committed files in a form that means the same on any machine."""
from __future__ import annotations

import os
from pathlib import Path


def find_repo_root(start: str | os.PathLike | None = None) -> Path | None:
    """The nearest folder at or above `start` (default: cwd) holding pyproject.toml and shiplib/."""
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file() and (d / "shiplib").is_dir():
            return d
    return None


def portable_path(path: str | os.PathLike) -> str:
    """`path` relative to the repository around the working directory (or to the working directory) when it
    lies inside it, so that result files record no absolute path of the machine that wrote them; else as is."""
    p = Path(path).resolve()
    for base in (find_repo_root(), Path.cwd().resolve()):
        if base is not None and p.is_relative_to(base):
            return p.relative_to(base).as_posix()
    return str(p)
