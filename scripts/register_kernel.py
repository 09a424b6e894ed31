"""Register the Jupyter kernel "shiplib" so that it runs this clone's .venv, wherever else clones exist.

Run with the clone's own interpreter (`.venv/bin/python scripts/register_kernel.py`; scripts/setup.sh does).

- Into the venv (`<venv>/share/jupyter/kernels/shiplib`): Jupyter started from a virtual environment looks there
  before the user's folder (jupyter_core prefers the environment), so `.venv/bin/papermill` and
  `.venv/bin/jupyter lab` always run this clone's Python, whatever another clone registered.
- For the user (`~/.local/share/jupyter/kernels/shiplib`), for a JupyterLab installed elsewhere: re-registered
  whenever it does not point at this interpreter (a missing Python of a deleted clone, or another clone's).

Prints where each points. Exit status 1 when the venv's Jupyter still resolves "shiplib" to another Python.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NAME, DISPLAY_NAME = "shiplib", "Python 3 (shiplib)"


def kernel_python(spec_dir: Path) -> str | None:
    """The interpreter a kernelspec folder starts, or None when it holds no readable kernel.json."""
    try:
        return json.loads((spec_dir / "kernel.json").read_text(encoding="utf-8"))["argv"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def install(where: str) -> None:
    subprocess.run([sys.executable, "-m", "ipykernel", "install", where, "--name", NAME,
                    "--display-name", DISPLAY_NAME], check=True, capture_output=True, text=True)


def main() -> int:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_core.paths import jupyter_data_dir

    me = sys.executable
    install("--sys-prefix")  # cheap, and always this interpreter
    user_dir = Path(jupyter_data_dir()) / "kernels" / NAME
    before = kernel_python(user_dir)
    if before != me:
        install("--user")
        why = ("was missing" if before is None else f"pointed to {before}, which no longer exists"
               if not Path(before).exists() else f"pointed to another Python, {before}")
        print(f"kernel {NAME!r} for the user: re-registered ({why})")
    resolved = KernelSpecManager().get_kernel_spec(NAME).argv[0]
    print(f"kernel {NAME!r} -> {resolved} (this clone's .venv; also registered for the user)")
    if resolved != me:
        print(f"error: Jupyter in this venv resolves kernel {NAME!r} to {resolved}, not {me}; "
              "remove that kernelspec (jupyter kernelspec remove shiplib) and run setup again", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
