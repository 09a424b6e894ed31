"""Static checks of every notebook: a `parameters` cell, the project kernel, thin code cells, committed outputs
in the exact form JupyterLab saves, no machine-specific or control text in them.

The notebooks are executed by strict `pytest --nbval` (CI) and written by `scripts/execute_notebooks.sh`.
"""
import ast
import json
from pathlib import Path

import nbformat
import pytest

from shiplib.report.notebook_format import KERNELSPEC, canonical_notebook, notebook_text

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: Code lines per cell beyond which a cell holds logic that belongs in the package (imports, blank lines and
#: comments do not count).
MAX_LOGIC_LINES = 15
#: The parameters each of the report notebooks must offer (papermill -p name value).
REQUIRED_PARAMETERS = {
    "vtab": {"task", "method", "seed", "epochs", "overrides", "results_dir", "runs_dir", "data_root", "device"},
    "affinity": {"affinity_dir", "thresholds", "data_root"},
    "loss_curves": {"task", "seeds", "results_dir"},
    "results": {"results_dir", "protocol"},
    "ablations": {"results_dir", "run_missing", "factors", "seeds"},
    "efficiency": {"methods", "backbone", "batch", "threads", "bench_file"},
    "pretrain_mini": {"train", "epochs", "recompute_evidence"},
    "claims": {"results_dir", "benchmark"},
}


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def logic_lines(text: str) -> int:
    """Non-blank lines that are not comments, imports or continuation lines of an import."""
    tree = ast.parse(text)
    import_lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            import_lines.update(range(node.lineno, node.end_lineno + 1))
    return sum(1 for i, line in enumerate(text.splitlines(), 1)
               if line.strip() and not line.strip().startswith("#") and i not in import_lines)


def parameter_names(nb: dict) -> set[str]:
    cell = next(c for c in code_cells(nb) if "parameters" in c.get("metadata", {}).get("tags", []))
    return {t.id for node in ast.parse(source(cell)).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def test_the_report_notebooks_exist():
    assert set(REQUIRED_PARAMETERS) <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_kernel_and_parameters_cell(path):
    nb = load(path)
    assert nb["metadata"]["kernelspec"] == KERNELSPEC
    tagged = [c for c in code_cells(nb) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one code cell tagged `parameters` (papermill)"
    assert tagged[0] is code_cells(nb)[0], "the parameters cell comes before any other code"
    body = ast.parse(source(tagged[0])).body
    assert body and all(isinstance(n, ast.Assign) for n in body), "the parameters cell only assigns values"
    if path.stem in REQUIRED_PARAMETERS:
        missing = REQUIRED_PARAMETERS[path.stem] - parameter_names(nb)
        assert not missing, f"missing parameters {sorted(missing)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_are_thin(path):
    for i, cell in enumerate(code_cells(load(path))):
        n = logic_lines(source(cell))
        assert n <= MAX_LOGIC_LINES, f"code cell {i} has {n} logic lines; move the logic into shiplib"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_committed_and_error_free(path):
    cells = code_cells(load(path))
    assert all(c.get("execution_count") for c in cells), "every code cell executed (scripts/execute_notebooks.sh)"
    assert any(c.get("outputs") for c in cells), "the notebook is committed with its outputs"
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"an output is an error: {errors[0].get('ename')}: {errors[0].get('evalue')}"


def test_vtab_defaults_do_not_reuse_committed_results():
    nb = load(NOTEBOOK_DIR / "vtab.ipynb")
    cell = next(c for c in code_cells(nb) if "parameters" in c.get("metadata", {}).get("tags", []))
    values = {t.id: ast.literal_eval(n.value) for n in ast.parse(source(cell)).body for t in n.targets}
    assert values["task"].startswith("mini_") and values["method"] == "ship"
    assert Path(values["results_dir"]).parts[0] == "runs", "default results must go to the gitignored runs/"
    assert Path(values["runs_dir"]).parts[0] == "runs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_in_the_form_jupyterlab_saves(path):
    """Opening a notebook in JupyterLab must not change it: nbformat's JSON with a trailing newline, the project
    kernel spec, merged streams and no execution timestamps (scripts/execute_notebooks.sh writes this form)."""
    text = path.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    assert text == notebook_text(canonical_notebook(nb)), \
        f"{path.name} is not in saved form: re-run scripts/execute_notebooks.sh {path.relative_to(NOTEBOOK_DIR.parent)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_hold_no_control_characters_absolute_paths_or_test_markers(path):
    nb = load(path)
    for i, cell in enumerate(nb["cells"]):
        assert "NBVAL_" not in source(cell), f"cell {i}: test markers do not belong in what users read"
        for out in cell.get("outputs", []):
            texts = [out.get("text", "")] + [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                assert "\r" not in text and "\x1b" not in text, f"cell {i}: carriage return or escape code in an output"
                for root in ("/work/", "/root/", "/home/", "/tmp/", "/Users/"):
                    assert root not in text, f"cell {i}: an absolute path ({root}...) in an output"
