"""A regular (non-editable) install of the wheel: it runs from a clone, or from anywhere with $SHIPLIB_HOME, and
elsewhere says where it looked for the project's data instead of failing on a path inside site-packages."""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN = ["-m", "shiplib", "run", "--task", "mini_mnist", "--method", "linear", "--epochs", "1", "--threads", "1",
       "--no-progress"]


def _run(args, cwd, env, timeout=600):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The python of a fresh venv with the wheel of this checkout installed (no editable link to the sources)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"  # a copy, so that building leaves no build/ or egg-info in the checkout
    shutil.copytree(REPO / "shiplib", src / "shiplib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
                  str(src)], cwd=tmp, env=os.environ)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp / "dist").glob("shiplib-*.whl"))

    env_dir = tmp / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    # The dependencies (torch, timm, …) come from the interpreter running the tests: `--system-site-packages`
    # only exposes the base interpreter's packages, and this one may itself be a venv. A .pth line adds its
    # site-packages after the new venv's own (its editable shiplib link, a .pth file there, is not processed).
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=tmp, env=os.environ).stdout.strip()
    Path(purelib, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-build-isolation", "--no-index", str(wheel)], cwd=tmp, env=os.environ)
    assert install.returncode == 0, install.stderr[-3000:]
    return python


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SHIPLIB_HOME", "SHIPLIB_DATA", "PYTHONPATH")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.slow
def test_the_installed_package_runs_from_a_clone(installed, tmp_path):
    # -P: the working directory (the clone, with its shiplib/ sources) is not put on sys.path
    where = _run([str(installed), "-P", "-c", "import shiplib; print(shiplib.__file__)"], cwd=REPO, env=_env())
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(installed.parents[1]), where
    out = ["--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]
    run = _run([str(installed), "-P", *RUN, *out], cwd=REPO, env=_env())
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "results/mini/mini_mnist/linear/seed1.json").read_text())
    assert result["config"]["data_root"] == "data/mini-vtab" and result["epochs"] == 1
    assert result["backbone"]["spec"] == "mini" and result["backbone"]["pretrained"]

    # from anywhere with $SHIPLIB_HOME: the same data and weights are found (the finished run is returned)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = _run([str(installed), "-P", *RUN, *out], cwd=elsewhere, env=_env(SHIPLIB_HOME=str(REPO)))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished" in again.stderr + again.stdout


@pytest.mark.slow
def test_the_installed_package_outside_a_clone_says_where_it_looked(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = ["--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]
    run = _run([str(installed), "-P", *RUN, *out], cwd=elsewhere, env=_env())
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert "SHIPLIB_HOME" in run.stderr and str(elsewhere) in run.stderr and "pyproject.toml" in run.stderr
    assert "site-packages" in run.stderr  # where the installed package is, and that it is not a repository
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()  # nothing started
