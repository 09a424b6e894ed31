"""Every "spec §N" in the repository resolves to a section of docs/ship_computation.md, the project's own
description of the SHIP computation."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "ship_computation.md"
SEARCHED = ("shiplib/**/*.py", "tests/**/*.py", "scripts/**/*.py", "scripts/**/*.sh", "notebooks/*.ipynb",
            "README.md", "docs/**/*.md")
# "spec §4", "docs/ship_computation.md §2-§4", "spec §4-§6, §10", "spec §4 pseudo-code"
REFERENCE = re.compile(r"(?:\bspec|ship_computation\.md)((?:\s*(?:[-–,]\s*)?§\d+)+)")


def spec_sections(text: str) -> list[int]:
    """Numbers of the document's numbered sections ("## 3. Title")."""
    return [int(m) for m in re.findall(r"^## (\d+)\. \S", text, flags=re.MULTILINE)]


def referenced_sections(text: str) -> set[int]:
    """Section numbers a text cites, ranges expanded."""
    found = set()
    for match in REFERENCE.finditer(text):
        chain = match.group(1)
        numbers = [int(n) for n in re.findall(r"§(\d+)", chain)]
        found.update(numbers)
        for a, b in re.findall(r"§(\d+)\s*[-–]\s*§(\d+)", chain):
            found.update(range(int(a), int(b) + 1))
    return found


def searched_files() -> list[Path]:
    files = {p for pattern in SEARCHED for p in ROOT.glob(pattern) if p.is_file()}
    return sorted(p for p in files if ".ipynb_checkpoints" not in p.parts)


def test_the_spec_has_consecutive_numbered_sections():
    sections = spec_sections(SPEC.read_text(encoding="utf-8"))
    assert sections == list(range(1, len(sections) + 1)) and len(sections) >= 11


def test_every_spec_reference_names_an_existing_section():
    sections = set(spec_sections(SPEC.read_text(encoding="utf-8")))
    cited, missing = {}, []
    for path in searched_files():
        numbers = referenced_sections(path.read_text(encoding="utf-8"))
        cited[path] = numbers
        missing += [f"{path.relative_to(ROOT)} cites §{n}" for n in sorted(numbers - sections)]
    assert not missing, "references to sections docs/ship_computation.md does not have:\n" + "\n".join(missing)
    assert sum(len(n) for n in cited.values()) > 20  # the search does see the references


def test_files_citing_the_spec_say_where_it_is():
    """A bare "spec §N" is resolvable: the same file names docs/ship_computation.md; no file cites a spec that is
    not in the repository."""
    unresolved = []
    for path in searched_files():
        text = path.read_text(encoding="utf-8")
        if path == SPEC:
            continue
        if re.search(r"\bspec §", text) and "docs/ship_computation.md" not in text:
            unresolved.append(str(path.relative_to(ROOT)))
        assert not re.search(r"ship_spec\.md §", text), f"{path.relative_to(ROOT)} cites a spec outside the repo"
    assert not unresolved, f"files citing 'spec §N' without naming docs/ship_computation.md: {unresolved}"


@pytest.mark.parametrize("text, expected", [
    ("the greedy chain of spec §3.", {3}),
    ("(docs/ship_computation.md §2-§4): block features", {2, 3, 4}),
    ("official (spec §4-§6, §10)", {4, 5, 6, 10}),
    ("special §5 and specification §6", set()),
])
def test_references_are_read_with_ranges_and_lists(text, expected):
    assert referenced_sections(text) == expected


def test_a_missing_section_is_reported():
    sections = set(spec_sections("## 1. A\n\n## 2. B\n"))
    assert referenced_sections("see spec " + "§3") - sections == {3}
