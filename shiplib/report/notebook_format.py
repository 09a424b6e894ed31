"""The committed notebooks' file form: exactly what JupyterLab saves, with the project's kernel.

JupyterLab rewrites a notebook whose kernel spec, metadata or stream outputs differ from what it would save (and
then marks every tab modified), so the notebooks are executed by `execute_notebook` and written in that form:
nbformat's JSON (sorted keys, indent 1, trailing newline), the ``shiplib`` kernel spec, consecutive outputs of one
stream merged as JupyterLab merges them, and no execution timestamps.
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat

from ..utils.io import atomic_write_text

#: The kernel `scripts/setup.sh` registers for the project's .venv (``python -m ipykernel install --user``).
KERNEL_NAME = "shiplib"
KERNELSPEC = {"display_name": "Python 3 (shiplib)", "language": "python", "name": KERNEL_NAME}
#: Metadata that says when and how long a run took: it changes with every execution, so it is not kept.
VOLATILE_METADATA = ("papermill", "execution", "ExecuteTime", "widgets")


def _merge_streams(outputs: list) -> list:
    merged: list = []
    for out in outputs:
        if (out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")):
            merged[-1]["text"] = merged[-1]["text"] + out["text"]
        else:
            merged.append(out)
    return merged


def canonical_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """`nb` in the committed form (a copy): project kernel spec, merged streams, no volatile metadata."""
    nb = nbformat.from_dict(nb)
    for key in VOLATILE_METADATA:
        nb.metadata.pop(key, None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    for cell in nb.cells:
        for key in VOLATILE_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = _merge_streams(cell.outputs)
    return nb


def notebook_text(nb: nbformat.NotebookNode) -> str:
    """The exact text JupyterLab writes for `nb` (nbformat's writer plus the trailing newline it adds)."""
    text = nbformat.writes(nb, version=nbformat.NO_CONVERT)
    return text if text.endswith("\n") else text + "\n"


def write_notebook(nb: nbformat.NotebookNode, path: str | os.PathLike) -> Path:
    return atomic_write_text(path, notebook_text(canonical_notebook(nb)))


def execute_notebook(path: str | os.PathLike, parameters: dict | None = None, out: str | os.PathLike | None = None,
                     timeout: int | None = 3600) -> Path:
    """Run a notebook with papermill (its parameters cell, the project kernel) and write it in committed form."""
    import papermill as pm  # deferred: papermill loads the Jupyter client stack, needed only to execute notebooks

    path = Path(path)
    nb = pm.execute_notebook(str(path), None, parameters=parameters or {}, kernel_name=KERNEL_NAME,
                             cwd=str(path.parent), progress_bar=False, execution_timeout=timeout)
    return write_notebook(nb, out or path)
