"""Rewrite the README's tables that are computed from the committed results: the claims table, SHIP against every
method under both protocols, and the per-task lr choices and the progress of the scaled protocol. The tests hold
them to the results; run this after new results are committed, then reread the prose around them.

Usage: python scripts/refresh_readme_tables.py [README.md] [results]
"""
from __future__ import annotations

import sys
from pathlib import Path

from shiplib.report.claims import claims_table, protocol_overview
from shiplib.report.tables import METHODS, markdown_table
from shiplib.report.tuning import CHOSEN_BUDGET, chosen_lr_table, grid_progress


def replace_table(text: str, header: str, table: str) -> str:
    """`text` with the markdown table that starts with the line `header` replaced by `table`."""
    start = text.find(header + "\n")
    if start < 0:
        raise SystemExit(f"no table starting with {header!r} in the README: add it once by hand, then rerun")
    end = text.find("\n\n", start)
    return text[:start] + table.rstrip("\n") + text[len(text) if end < 0 else end:]


def main(readme: str = "README.md", results: str = "results") -> None:
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    claims = markdown_table(claims_table(results)[["paper", "companion", "verdict"]])
    overview = markdown_table(protocol_overview(results))
    lrs = markdown_table(chosen_lr_table(results, CHOSEN_BUDGET, list(METHODS)))
    progress = markdown_table(grid_progress(results, CHOSEN_BUDGET, list(METHODS)))
    for table in (claims, overview, lrs, progress):
        text = replace_table(text, table.split("\n", 1)[0], table)
    path.write_text(text, encoding="utf-8")
    print(f"{path}: claims, protocol overview, per-task lr and progress tables rewritten from {results}/")


if __name__ == "__main__":
    main(*sys.argv[1:])
