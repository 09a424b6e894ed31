"""Rewrite environment.yml from requirements.txt (run after changing requirements.txt)."""
from pathlib import Path

root = Path(__file__).resolve().parents[1]
reqs = [ln.strip() for ln in (root / "requirements.txt").read_text().splitlines()
        if ln.strip() and not ln.strip().startswith("#")]
head = ("# conda env create -f environment.yml  (the pip section is requirements.txt, kept identical by a test;\n"
        "# regenerate with `python scripts/sync_environment.py`)\n"
        "name: shiplib\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n")
(root / "environment.yml").write_text(head + "".join(f"      - {r}\n" for r in reqs) + "      - -e .\n")
