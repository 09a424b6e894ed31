"""Print the package's size: lines per sub-package and its largest functions.

Usage: python scripts/code_stats.py [--top N] [--package PATH]

Lines are physical lines of the .py files; a function's size is its span in lines
(``end_lineno - lineno + 1``, decorators excluded), nested functions counted on their own too.
"""
from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "shiplib"


def lines_per_package(root: Path = PACKAGE) -> dict[str, int]:
    """Line count per first-level sub-package (modules directly in the package count as ``shiplib``)."""
    counts: dict[str, int] = defaultdict(int)
    for file in root.rglob("*.py"):
        rel = file.relative_to(root)
        key = f"shiplib/{rel.parts[0]}" if len(rel.parts) > 1 else "shiplib (top-level modules)"
        counts[key] += len(file.read_text(encoding="utf-8").splitlines())
    return dict(sorted(counts.items()))


def largest_functions(root: Path = PACKAGE, top: int = 10) -> list[tuple[int, str]]:
    """The ``top`` longest functions as (lines, "path:line qualified.name")."""
    found: list[tuple[int, str]] = []
    for file in sorted(root.rglob("*.py")):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        rel = file.relative_to(root.parent).as_posix()

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    size = child.end_lineno - child.lineno + 1
                    found.append((size, f"{rel}:{child.lineno} {prefix}{child.name}"))
                    visit(child, f"{prefix}{child.name}.")
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")
                else:
                    visit(child, prefix)

        visit(tree, "")
    found.sort(key=lambda item: (-item[0], item[1]))
    return found[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10, help="how many functions to list (default 10)")
    parser.add_argument("--package", type=Path, default=PACKAGE,
                        help="the shiplib package folder to measure (default: this checkout's)")
    args = parser.parse_args()
    counts = lines_per_package(args.package)
    print("lines per package")
    for name, n in counts.items():
        print(f"  {name:32s} {n:6d}")
    print(f"  {'total':32s} {sum(counts.values()):6d}")
    print(f"\n{args.top} largest functions (lines)")
    for size, where in largest_functions(args.package, top=args.top):
        print(f"  {size:4d}  {where}")


if __name__ == "__main__":
    main()
