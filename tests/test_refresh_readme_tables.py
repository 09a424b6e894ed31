"""scripts/refresh_readme_tables.py rewrites the README's computed tables from the results, and only them."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def refresh(readme: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/refresh_readme_tables.py", str(readme), "results"], cwd=REPO,
                          capture_output=True, text=True)


def test_a_stale_claims_row_and_lr_cell_are_rewritten_and_the_prose_is_kept(tmp_path):
    fresh, stale = tmp_path / "fresh.md", tmp_path / "stale.md"
    text = (REPO / "README.md").read_text(encoding="utf-8")
    fresh.write_text(text, encoding="utf-8")
    assert refresh(fresh).returncode == 0
    refreshed = fresh.read_text(encoding="utf-8")
    row = next(line for line in refreshed.splitlines() if line.startswith("| SHIP is more accurate than VPT-deep |"))
    lr_row = next(line for line in refreshed.splitlines() if line.startswith("| ship | ") and "seed" in line)
    stale.write_text(refreshed.replace(row, "| SHIP is more accurate than VPT-deep | x | y | z |")
                     .replace(lr_row, "| ship | 1e-05 |"), encoding="utf-8")
    assert refresh(stale).returncode == 0
    assert stale.read_text(encoding="utf-8") == refreshed  # restored, and nothing else touched
    outside = [line for line in text.splitlines() if not line.startswith("|")]
    assert outside == [line for line in refreshed.splitlines() if not line.startswith("|")]


def test_a_readme_without_the_table_gets_a_clear_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# nothing here\n", encoding="utf-8")
    done = refresh(readme)
    assert done.returncode != 0 and "no table starting with '| claim | paper | companion | verdict |'" in done.stderr
