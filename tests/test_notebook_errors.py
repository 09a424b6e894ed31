"""Every error a user can fix shows as one line in a notebook: a table of the package's `ShiplibError` classes,
each raised by real shiplib code as a user meets it, executed in a real kernel (nbclient), whose error output must
be the single line `<class>: <message>`, with the notebook form of the fix where it differs from the command line's.
Only a data check that lists several bad lines of a list file gives one line per problem (`MULTI_LINE`).
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

import shiplib
from shiplib.errors import ShiplibError
from shiplib.launch import slurm
from conftest import write_tiny_task

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "results" / "mini" / "mini_mnist" / "ship" / "seed1.json"
#: The folders a cell's run writes to ({tmp} is the test's temporary folder).
OUT = 'results_dir="{tmp}/results", runs_dir="{tmp}/runs", threads=1'

#: Rows whose message lists one problem per line (the data checks name every bad line of a list file).
MULTI_LINE = {"DataError"}
#: (error class, cell that makes shiplib raise it, texts its one line must hold). The cells run in order in one
#: kernel; those that change the environment restore it.
TABLE = [
    ("MissingDataError", 'run_experiment(RunConfig(task="svhn", method="ship", data_root="{tmp}/empty", ' + OUT + '))',
     ['data_root="DIR"', "-p data_root DIR", "--data-root DIR"]),
    ("DataError", 'run_experiment(RunConfig(task="svhn", method="linear", data_root="{tmp}/broken", ' + OUT + '))',
     ["label"]),
    ("ConfigError", 'run_experiment(RunConfig(task="mini_mnist", method="ship", preset="vtp", ' + OUT + '))',
     ["valid presets: ship, vpt", 'overrides={{"preset": "ship"}}', "-p overrides 'preset=ship'"]),
    ("ConfigError", 'run_experiment(RunConfig(task="mini_mnist", method="ship", batch_size=5000, ' + OUT + '))',
     ["1000 images", 'overrides={{"batch_size": 1000}}', "--set batch_size=1000"]),
    ("ConfigError", 'run_experiment(RunConfig(task="mini_mnist", method="ship", seed=1, results_dir="{tmp}/committed", '
                    'runs_dir="{tmp}/runs", threads=1).with_overrides({{"lr": 0.5}}))',
     ["another configuration", "--tag e2", 'overrides={{"tag": "e2"}}', "-p overrides 'tag=e2'", "--force",
      "force=True"]),
    ("ConfigError", 'os.environ["SHIPLIB_PROGRESS"] = "bogus"\ntry:\n    progress_bar(range(2))\n'
                    'finally:\n    os.environ["SHIPLIB_PROGRESS"] = "lines"',
     ["'bogus' is not a progress mode", "%env SHIPLIB_PROGRESS=lines"]),
    ("BackboneError", 'run_experiment(RunConfig(task="mini_mnist", method="ship", backbone="{tmp}/none.safetensors", '
                      + OUT + '))', ["does not exist"]),
    ("NonFiniteLossError", 'run_experiment(RunConfig(task="svhn", method="linear", data_root="{tmp}/tiny", '
                           'backbone="mini", img_size=32, batch_size=16, epochs=1, warmup_epochs=0, lr=1e20, '
                           + OUT + '))', ["lower the learning rate", 'overrides={{"lr":']),
    ("ResourceError", 'check_memory(estimate_run(build_model("linear", backbone="mini", num_classes=10), 64, 32), '
                      'budget=1024)', ["batch_size"]),
    ("StateError", 'cfg = RunConfig(task="mini_mnist", method="ship", ' + OUT + ')\n'
                   'held, _ = locks.acquire(paths_for(resolve_config(cfg)).work_dir)  # as a running training does\n'
                   'run_locked(cfg)', ["is being trained by", "right now"]),
    ("UnreadableResultError", 'read_result("{tmp}/garbage.json")', ["garbage.json"]),
    ("ResultConflictError", 'shutil.copy("{repo}/results/mini/mini_mnist/linear/seed1.json", "{tmp}/seed1.json")\n'
                            'commit_result("{tmp}/seed1.json", dict(read_result("{tmp}/seed1.json"), '
                            'identity={{"lr": 9}}), None)',
     ["written by another run", "--tag e2", 'overrides={{"tag": "e2"}}', 'results_dir="DIR"']),
    ("ProjectRootError", 'os.environ["SHIPLIB_HOME"] = "{tmp}/nowhere"\ntry:\n    project_root()\nfinally:\n'
                         '    os.environ["SHIPLIB_HOME"] = "{repo}"', ["does not exist"]),
    ("PrepareError", 'prepare_task("mini_mnist", out="{tmp}/prepared")', ["build-mini"]),
    ("UnknownParameterError", 'check_parameters(["epochs = None\\noverrides = {{}}",  '
                              '# as papermill -p epoch 3 -p lr 0.5\n'
                              '                  "# Parameters\\nepoch = 3\\nlr = 0.5", "check_parameters()"])',
     ["'epoch' (did you mean 'epochs'?)", "-p overrides 'lr=0.5'"]),
    ("PrecisionError", 'run_experiment(RunConfig(task="mini_mnist", method="linear", precision="tf32", device="cpu", '
                       + OUT + '))', ["tf32 needs a CUDA GPU", 'overrides={{"precision": "fp32"}}',
                                      "--precision fp32"]),
    ("LaunchError", "local_slots(0, None, 'cpu')", ["--jobs must be at least 1"]),
    ("SlurmError", "slurm.require()", ["SLURM not found"]),
]

IMPORTS = """\
import os
import shutil
from shiplib import build_model
from shiplib.data.tfds_prepare import prepare_task
from shiplib.engine import RunConfig, resolve_config, run_experiment
from shiplib.engine.run import paths_for
from shiplib.launch import locks
from shiplib.launch.job import run_locked
from shiplib.engine.resources import check_memory, estimate_run
from shiplib.engine.results import commit_result, read_result
from shiplib.launch import slurm
from shiplib.launch.launchers import local_slots
from shiplib.report import check_parameters
from shiplib.utils.paths import project_root
from shiplib.utils.progress import progress_bar"""


def user_error_classes() -> set[str]:
    """Every ShiplibError subclass the package defines (every module imported)."""
    for info in pkgutil.walk_packages(shiplib.__path__, "shiplib."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found, stack = set(), [ShiplibError]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("shiplib.") and inspect.isclass(sub):
                found.add(sub.__name__)
            stack.append(sub)
    return found


def test_the_table_lists_every_user_error_class():
    missing = user_error_classes() - {name for name, _, _ in TABLE}
    assert not missing, f"add a row to TABLE for {sorted(missing)}"


def _folders(tmp: Path) -> None:
    (tmp / "empty").mkdir()
    write_tiny_task(tmp / "tiny", "svhn")
    broken = write_tiny_task(tmp / "broken", "svhn")
    lines = (broken / "train800val200.txt").read_text().splitlines()
    lines[3] = lines[3].rsplit(" ", 1)[0] + " 99"  # svhn has 10 classes
    (broken / "train800val200.txt").write_text("\n".join(lines) + "\n")
    committed = tmp / "committed" / COMMITTED.relative_to(REPO / "results")
    committed.parent.mkdir(parents=True)
    shutil.copy(COMMITTED, committed)
    (tmp / "garbage.json").write_text('{"identity": ')


def test_each_user_error_is_one_line_in_a_notebook(tmp_path, monkeypatch):
    _folders(tmp_path)
    for name, value in dict(PYTHONPATH=str(REPO), SHIPLIB_HOME=str(REPO), SHIPLIB_PROGRESS="lines",
                            OMP_NUM_THREADS="1").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SHIPLIB_DEBUG", raising=False)
    rows = [row for row in TABLE if not (row[0] == "SlurmError" and slurm.available())]
    cells = [nbformat.v4.new_code_cell(IMPORTS)] + [
        nbformat.v4.new_code_cell(code.format(tmp=tmp_path, repo=REPO)) for _, code, _ in rows]
    nb = nbformat.v4.new_notebook(cells=cells)
    NotebookClient(nb, kernel_name="python3", timeout=300, allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert not [o for o in nb.cells[0].outputs if o.output_type == "error"], nb.cells[0].outputs
    for (name, _, texts), cell in zip(rows, nb.cells[1:]):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert [o.ename for o in errors] == [name], (name, cell.outputs)
        line = f"{name}: {errors[0].evalue}"
        assert errors[0].traceback == [line], errors[0].traceback  # the message, no call stack
        assert name in MULTI_LINE or "\n" not in line, line
        for text in texts:
            assert text.format() in line, (text, line)
        assert not [o for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"], cell.outputs
