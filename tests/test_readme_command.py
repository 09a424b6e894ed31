"""README command 1, verbatim, as a newcomer runs it: a fresh clone (the tracked files only, no .venv, no runs/),
a scratch HOME holding a stale "shiplib" kernel of a deleted clone, and the command exactly as the README prints
it. Setup must repair the kernel, papermill must run this clone's code, and the output notebook must show the
default run reproducing its committed result."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: setup (a fresh venv, about 2-5 min) plus the default run of vtab.ipynb (about 2-6 min on a busy 2-core machine)
TIMEOUT = 2400


def readme_command(number: int) -> str:
    """The command under the README's `# <number>.` comment in "The two commands" (its shell lines, joined)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## The two commands\s+```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no ```bash block under '## The two commands'"
    lines, taking = [], False
    for line in block.group(1).splitlines():
        if re.match(r"# \d+\.", line):
            taking = line.startswith(f"# {number}.")
            continue
        if line.startswith("#"):  # a comment's continuation
            continue
        if taking and line.strip():
            lines.append(line)
    assert lines, f"README command {number} not found"
    return "\n".join(lines)


def test_readme_command_text_is_what_this_test_runs():
    assert readme_command(1).startswith("bash scripts/setup.sh && .venv/bin/papermill notebooks/vtab.ipynb ")
    assert readme_command(2).startswith("SHIPLIB_BROWSER=1 bash scripts/setup.sh && .venv/bin/python -m pytest")


def fresh_clone(dest: Path) -> Path:
    """The files git tracks, as they are in this checkout: what a clone of this commit holds."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, names):
        src = REPO / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    return dest


def test_command_1_on_a_fresh_clone_with_a_stale_kernel(tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    home = tmp_path / "home"
    stale = home / ".local" / "share" / "jupyter" / "kernels" / "shiplib"
    stale.mkdir(parents=True)
    gone = tmp_path / "deleted-clone" / ".venv" / "bin" / "python"
    (stale / "kernel.json").write_text(json.dumps({
        "argv": [str(gone), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (shiplib)", "language": "python"}))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "JPY_", "IPYTHON", "VIRTUAL_ENV", "PYTHON", "SHIPLIB_", "PIP_"))}
    env.update(HOME=str(home), PATH=os.environ.get("PATH", "/usr/bin:/bin"))
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")  # no re-download
    proc = subprocess.run(["bash", "-c", readme_command(1)], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    python = str(clone / ".venv" / "bin" / "python")
    assert f"kernel 'shiplib' -> {python}" in out, out[-3000:]
    assert "which no longer exists" in out
    assert json.loads((stale / "kernel.json").read_text())["argv"][0] == python

    nb = json.loads((clone / "runs" / "vtab.ipynb").read_text(encoding="utf-8"))
    texts = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            assert o.get("output_type") != "error", f"cell failed: {o.get('ename')}: {o.get('evalue')}"
            texts.append("".join(o.get("text") or o.get("data", {}).get("text/plain") or ""))
    shown = "\n".join(texts)
    # the notebook ran this clone's package: it wrote its result inside this clone
    assert (clone / "runs" / "notebook" / "results" / "mini" / "mini_mnist" / "ship"
            / "seed1.json").is_file(), shown[-2000:]
    verdict = next((t for t in texts if "results/mini/mini_mnist/ship/seed1.json" in t and "reproduced" in t), None)
    assert verdict is not None, "the output notebook shows no comparison with the committed result"
    assert "reproduced True" in verdict and "False" not in verdict, verdict
