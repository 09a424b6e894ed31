"""The pip requirements and environment.yml's pip section must stay identical."""
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
