"""environment.yml and pyproject.toml must describe the same dependencies, with lower bounds
only."""

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])


def _environment_requirements() -> set[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("  - pip:")
    return {
        ln.strip()[2:]
        for ln in lines[start + 1 :]
        if ln.strip().startswith("- ") and "-e ." not in ln
    }


def test_environment_matches_pyproject():
    assert _environment_requirements() == _pyproject_requirements()


def test_lower_bounds_only():
    for req in _pyproject_requirements():
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+>=[0-9.]+", req), (
            f"{req}: use a lower bound (>=) only"
        )


def test_no_heavy_frameworks_in_the_library():
    for path in (ROOT / "minillada").rglob("*.py"):
        text = path.read_text()
        for name in ("transformers", "lightning", "accelerate"):
            assert not re.search(rf"^\s*(import|from) {name}\b", text, re.M), (
                f"{path} imports {name}"
            )
