"""Where the project is, and paths written into committed files in a form that means the same on any machine.

The project root is the folder that holds `data/` (task folders, the committed mini backbone in
`data/checkpoints/`). It is found, in this order, from:

1. an explicit `root` argument;
2. `$SHIPLIB_HOME`;
3. the repository around the working directory (a folder with `pyproject.toml` and `shiplib/`);
4. the repository the imported package lives in (an editable install or a source checkout; after a regular
   `pip install` the package lives in site-packages and this step finds nothing).

So an installed package works when run from a clone, or anywhere with `$SHIPLIB_HOME` set, and otherwise says
where it looked.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError

ENV_HOME = "SHIPLIB_HOME"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


class ProjectRootError(ConfigError, FileNotFoundError):
    """The project folder cannot be found, or `$SHIPLIB_HOME` names something that is not a project folder."""


def find_repo_root(start: str | os.PathLike | None = None) -> Path | None:
    """The nearest folder at or above `start` (default: cwd) holding pyproject.toml and shiplib/."""
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file() and (d / "shiplib").is_dir():
            return d
    return None


def _checked_dir(path: str | os.PathLike, what: str, project: bool = False) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ProjectRootError(f"{what} is {str(path)!r}, which does not exist. Point it to a clone of the shiplib "
                               "repository (the folder holding data/), or unset it.")
    if not p.is_dir():
        raise ProjectRootError(f"{what} is {str(path)!r}, which is a file, not a folder. Point it to a clone of the "
                               "shiplib repository (the folder holding data/), or unset it.")
    if project and not (p / "data").is_dir() and find_repo_root(p) != p.resolve():
        raise ProjectRootError(f"{what} is {str(path)!r}, which is not a shiplib project folder (it holds no data/ "
                               "folder, nor pyproject.toml and shiplib/). Point it to a clone of the shiplib "
                               "repository, or unset it.")
    return p.resolve()


def project_root(root: str | os.PathLike | None = None) -> Path:
    """The project folder (see the module docstring for the search order); fails saying where it looked."""
    if root is not None:
        return _checked_dir(root, "the project root argument")
    if os.environ.get(ENV_HOME):
        return _checked_dir(os.environ[ENV_HOME], f"${ENV_HOME}", project=True)
    found = find_repo_root() or find_repo_root(_PACKAGE_DIR)
    if found is not None:
        return found
    raise ProjectRootError(
        f"cannot find the shiplib project folder (the one holding data/): ${ENV_HOME} is not set, no folder at or "
        f"above the working directory {Path.cwd()} holds pyproject.toml and shiplib/, and the installed package "
        f"({_PACKAGE_DIR}) is not inside a repository. Run from a clone of the repository, or set "
        f"{ENV_HOME}=<path to the clone>.")


def portable_path(path: str | os.PathLike) -> str:
    """`path` relative to the repository around the working directory (or to the working directory) when it
    lies inside it, so that result files record no absolute path of the machine that wrote them; else as is."""
    p = Path(path).resolve()
    for base in (find_repo_root(), Path.cwd().resolve()):
        if base is not None and p.is_relative_to(base):
            return p.relative_to(base).as_posix()
    return str(p)
