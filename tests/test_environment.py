"""The pip requirements and environment.yml's pip section stay identical; the lock agrees with both and with
the environment the tests run in."""
import re
from importlib import metadata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_environment_yml_pip_section_equals_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip section"
    pip = [p for p in pip_sections[0] if p != "-e ."]
    assert pip == _requirements(), "environment.yml's pip section differs from requirements.txt: copy it over"
    assert any(str(d).startswith("python") for d in env["dependencies"] if isinstance(d, str))


def test_torch_pins():
    reqs = _requirements()
    assert "torch==2.14.1" in reqs and "torchvision==0.29.1" in reqs


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines) -> dict[str, str]:
    """{canonical name: version} of the `name==version` lines."""
    pins = {}
    for ln in lines:
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;]+)", ln.strip())
        if m:
            pins[_canonical(m.group(1))] = m.group(2)
    return pins


def _lock() -> dict[str, str]:
    return _pins(ln for ln in (ROOT / "constraints.txt").read_text().splitlines() if not ln.startswith("#"))


def test_requirements_apply_the_lock_and_agree_with_it():
    reqs = _requirements()
    assert "-c constraints.txt" in reqs, "requirements.txt must apply the lock with '-c constraints.txt'"
    direct, lock = _pins(reqs), _lock()
    assert len(direct) == len(reqs) - 1, "every requirement is an exact pin (name==version)"
    differ = {n: (v, lock.get(n)) for n, v in direct.items() if lock.get(n) != v}
    assert not differ, f"requirements.txt and constraints.txt pin other versions (requirement, lock): {differ}; " \
                       "run scripts/lock_environment.sh"


def test_the_environment_is_the_locked_one():
    """Every locked package is installed at its locked version (scripts/setup.sh installs with the lock)."""
    differ = {}
    for name, version in _lock().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            differ[name] = (version, installed)
    assert not differ, f"installed packages differ from constraints.txt (locked, installed): {differ}; " \
                       "run scripts/setup.sh"
