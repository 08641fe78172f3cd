"""The conda environment and pyproject.toml pin the same versions."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEST_ONLY = {"pytest", "pytest-timeout", "pytest-xdist", "ruff", "snakefmt"}


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", requirement.strip())
        assert match, f"not pinned with ==: {requirement!r}"
        pins[match.group(1).lower()] = match.group(2)
    return pins


def test_every_dependency_is_pinned_and_conda_agrees() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    python_pins = _pins(project["dependencies"])
    assert set(_pins(project["optional-dependencies"]["test"])) == TEST_ONLY

    env = yaml.safe_load((ROOT / "envs" / "brainage.yaml").read_text())
    pip_sections = [item["pip"] for item in env["dependencies"] if isinstance(item, dict)]
    assert len(pip_sections) == 1
    assert _pins(pip_sections[0]) == python_pins
    assert "python=3.11" in env["dependencies"]


def test_every_rule_uses_the_pinned_environment() -> None:
    for rules_file in (ROOT / "workflow" / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"([^"]+)"', rules_file.read_text()):
            assert (rules_file.parent / env).resolve() == ROOT / "envs" / "brainage.yaml"
