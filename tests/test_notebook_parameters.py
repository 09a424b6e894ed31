"""Notebook parameters are checked: every parameters cell parses cleanly under papermill (so its "unknown
parameter" warning means what it says), and a `-p name` the notebook does not declare stops it in the next cell
with an error that names the valid parameters (`shiplib.report.check_parameters`); without papermill the check is
a no-op."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

import nbformat
import papermill as pm
import pytest
from nbclient import NotebookClient

from shiplib.report import UnknownParameterError, check_parameters
from shiplib.report.parameters import INJECTED_HEADER

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
PARAMS = 'task = "mini_mnist"\nepochs = None  # None: the default\noverrides = {}\n'


def parameters_cell(nb) -> int:
    return next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_parses_cleanly_under_papermill(path, caplog):
    nb = nbformat.read(path, as_version=4)
    source = nb.cells[parameters_cell(nb)].source
    declared = [t.id for node in ast.parse(source).body if isinstance(node, ast.Assign) for t in node.targets]
    with caplog.at_level(logging.WARNING, logger="papermill"):
        inferred = list(pm.inspect_notebook(str(path)))
    assert inferred == declared and not caplog.records, [r.getMessage() for r in caplog.records]
    assert source.splitlines()[0] != INJECTED_HEADER  # else the check would take it for papermill's cell


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_cell_after_the_parameters_checks_them_first(path):
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells[parameters_cell(nb) + 1:] if c.cell_type == "code")
    statements = [s for s in ast.parse(cell.source).body if not isinstance(s, (ast.Import, ast.ImportFrom))]
    assert ast.unparse(statements[0]) == "check_parameters()", cell.source
    assert "**Parameters:**" in nb.cells[0].source  # the intro says how parameters are passed


@pytest.mark.parametrize("injected, expected", [
    ("lr = 0.5", "unknown notebook parameter 'lr'; this notebook's parameters: task, epochs, overrides. Other run "
                 "settings go through overrides: -p overrides 'lr=0.5'."),
    ("epoch = 3", "unknown notebook parameter 'epoch' (did you mean 'epochs'?); this notebook's parameters: task, "
                  "epochs, overrides."),
    ("tag = 'e2'\nK = 20", "unknown notebook parameters 'tag', 'K'; this notebook's parameters: task, epochs, "
                           "overrides. Other run settings go through overrides: -p overrides 'tag=e2, K=20'."),
])
def test_an_unknown_parameter_names_the_valid_ones(injected, expected):
    with pytest.raises(UnknownParameterError) as e:
        check_parameters(["", PARAMS, f"{INJECTED_HEADER}\n{injected}\n", "check_parameters()"])
    assert str(e.value) == expected


@pytest.mark.parametrize("history", [
    ["", PARAMS, f"{INJECTED_HEADER}\nepochs = 2\noverrides = \"lr=0.5\"\n", "check_parameters()"],  # valid
    ["", PARAMS, "check_parameters()"],  # JupyterLab, nbval, papermill without -p: no injected cell
    ["", "lr = 0.5", PARAMS, "check_parameters()"],  # a user's own cell before the parameters
    ["check_parameters()"],
])
def test_declared_parameters_and_runs_without_papermill_pass(history):
    check_parameters(history)


def _env(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the kernel imports this checkout's shiplib
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_papermill_stops_the_real_notebook_at_an_unknown_parameter(tmp_path, monkeypatch):
    _env(monkeypatch)
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(REPO / "notebooks" / "vtab.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"lr": 0.5, "epoch": 3}, kernel_name="python3", cwd=str(tmp_path),
                            progress_bar=False)
    assert e.value.ename == "UnknownParameterError"
    assert e.value.evalue.startswith("unknown notebook parameters 'lr', 'epoch' (did you mean 'epochs'?); this "
                                     "notebook's parameters: task, method, seed, epochs, overrides,")
    assert e.value.traceback == [f"UnknownParameterError: {e.value.evalue}"]  # one line, no call stack


@pytest.mark.parametrize("parameters", [None, {"epochs": 2}])
def test_valid_parameters_and_plain_kernels_run(tmp_path, monkeypatch, parameters):
    _env(monkeypatch)
    params = nbformat.v4.new_code_cell(PARAMS, metadata={"tags": ["parameters"]})
    check = nbformat.v4.new_code_cell("from shiplib.report import check_parameters\ncheck_parameters()\nprint(epochs)")
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = nbformat.v4.new_notebook(cells=[params, check], metadata={"kernelspec": kernel})
    if parameters is None:  # as JupyterLab and nbval run it
        NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
        printed = nb.cells[1].outputs[0].text
    else:
        nbformat.write(nb, tmp_path / "in.ipynb")
        out = pm.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), parameters=parameters,
                                  kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
        printed = out.cells[-1].outputs[0].text
    assert printed.strip() == str((parameters or {}).get("epochs"))
