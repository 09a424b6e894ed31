"""The notebook test session runs vtab.ipynb as a fresh clone would and leaves the user's `runs/notebook/` as it was
(tests/conftest.py): moved aside for the session, put back after it, repaired after a crash."""
import importlib.util
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parent / "conftest.py"


@pytest.fixture
def hooks(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("conftest_copy", CONFTEST)  # a copy: its constants change
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "NOTEBOOK_RUNS", tmp_path / "runs" / "notebook")
    monkeypatch.setattr(module, "ASIDE", tmp_path / "runs" / "notebook.kept-during-tests")
    return module


class Session:
    """What the hooks read of a pytest session: its items and the config's stash."""

    def __init__(self, *paths):
        self.items = [type("Item", (), {"path": Path(p)})() for p in paths]
        self.config = type("Config", (), {"stash": pytest.Stash()})()


def test_the_users_notebook_runs_are_hidden_during_the_session_and_come_back(hooks):
    user = hooks.NOTEBOOK_RUNS / "results" / "seed1.json"
    user.parent.mkdir(parents=True)
    user.write_text("the user's result")
    tests_only = Session("tests/test_cli.py")
    hooks.pytest_sessionstart(tests_only)
    hooks.pytest_collection_finish(tests_only)
    hooks.pytest_sessionfinish(tests_only, 0)
    assert user.read_text() == "the user's result"  # a session without notebooks leaves the folder alone
    session = Session("tests/test_cli.py", "notebooks/vtab.ipynb")
    hooks.pytest_sessionstart(session)
    hooks.pytest_collection_finish(session)
    assert not hooks.NOTEBOOK_RUNS.exists()  # the notebook trains as on a fresh clone
    (hooks.NOTEBOOK_RUNS / "results").mkdir(parents=True)
    (hooks.NOTEBOOK_RUNS / "results" / "seed1.json").write_text("the session's result")
    hooks.pytest_sessionfinish(session, 0)
    assert user.read_text() == "the user's result" and not hooks.ASIDE.exists()


def test_a_crashed_session_is_repaired_by_the_next_and_a_clean_clone_stays_clean(hooks):
    hooks.ASIDE.mkdir(parents=True)
    (hooks.ASIDE / "kept.txt").write_text("kept")
    hooks.NOTEBOOK_RUNS.mkdir()
    (hooks.NOTEBOOK_RUNS / "partial.txt").write_text("left by the crashed session")
    session = Session("notebooks/vtab.ipynb")
    hooks.pytest_sessionstart(session)  # the crashed session's folder is repaired first
    hooks.pytest_collection_finish(session)
    assert (hooks.ASIDE / "kept.txt").read_text() == "kept" and not hooks.NOTEBOOK_RUNS.exists()
    hooks.pytest_sessionfinish(session, 0)
    assert sorted(p.name for p in hooks.NOTEBOOK_RUNS.iterdir()) == ["kept.txt"]


def test_on_a_clean_clone_the_sessions_own_files_go(hooks):
    session = Session("notebooks/vtab.ipynb")
    hooks.pytest_sessionstart(session)
    hooks.pytest_collection_finish(session)
    (hooks.NOTEBOOK_RUNS / "results").mkdir(parents=True)
    hooks.pytest_sessionfinish(session, 0)
    assert not hooks.NOTEBOOK_RUNS.exists() and not hooks.ASIDE.exists()
