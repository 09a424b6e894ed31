"""The notebook test session runs vtab.ipynb as a fresh clone would and leaves the user's `runs/notebook/` as it was
(notebooks/conftest.py): moved aside for the session, put back after it, repaired after a crash."""
import importlib.util
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "notebooks" / "conftest.py"


@pytest.fixture
def hooks(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("notebooks_conftest", CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "NOTEBOOK_RUNS", tmp_path / "runs" / "notebook")
    monkeypatch.setattr(module, "ASIDE", tmp_path / "runs" / "notebook.kept-during-tests")
    return module


def test_the_users_notebook_runs_are_hidden_during_the_session_and_come_back(hooks):
    user = hooks.NOTEBOOK_RUNS / "results" / "seed1.json"
    user.parent.mkdir(parents=True)
    user.write_text("the user's result")
    hooks.pytest_sessionstart(None)
    assert not hooks.NOTEBOOK_RUNS.exists()  # the notebook trains as on a fresh clone
    (hooks.NOTEBOOK_RUNS / "results").mkdir(parents=True)
    (hooks.NOTEBOOK_RUNS / "results" / "seed1.json").write_text("the session's result")
    hooks.pytest_sessionfinish(None, 0)
    assert user.read_text() == "the user's result" and not hooks.ASIDE.exists()


def test_a_crashed_session_is_repaired_by_the_next_and_a_clean_clone_stays_clean(hooks):
    hooks.ASIDE.mkdir(parents=True)
    (hooks.ASIDE / "kept.txt").write_text("kept")
    hooks.NOTEBOOK_RUNS.mkdir()
    (hooks.NOTEBOOK_RUNS / "partial.txt").write_text("left by the crashed session")
    hooks.pytest_sessionstart(None)
    assert (hooks.ASIDE / "kept.txt").read_text() == "kept" and not hooks.NOTEBOOK_RUNS.exists()
    hooks.pytest_sessionfinish(None, 0)
    assert sorted(p.name for p in hooks.NOTEBOOK_RUNS.iterdir()) == ["kept.txt"]


def test_on_a_clean_clone_the_sessions_own_files_go(hooks):
    hooks.pytest_sessionstart(None)
    (hooks.NOTEBOOK_RUNS / "results").mkdir(parents=True)
    hooks.pytest_sessionfinish(None, 0)
    assert not hooks.NOTEBOOK_RUNS.exists() and not hooks.ASIDE.exists()
