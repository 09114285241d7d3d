"""environment.yml and pyproject.toml must describe the same dependencies,
with lower bounds only."""

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


def test_every_subpackage_is_a_regular_package():
    # setuptools' find (pyproject: include = ["minillada*"]) installs folders with an __init__.py
    for folder in (ROOT / "minillada").iterdir():
        if folder.is_dir() and folder.name != "__pycache__":
            assert (folder / "__init__.py").is_file(), f"{folder} has no __init__.py"


def test_imports_run_one_way():
    """runtime < data, models < diffusion < sampling < training < checkpoints < evaluation <
    cli, exercises: a module imports only from its own stage or the stages below, and only at
    the top of the file (no function-local imports hiding a cycle)."""
    import ast

    rank = {"runtime": 0, "estimate": 0, "data": 1, "models": 1, "diffusion": 2, "sampling": 3}
    rank |= {"training": 4, "checkpoints": 5, "evaluation": 6, "cli": 7, "exercises": 7}
    problems = []
    for path in sorted((ROOT / "minillada").rglob("*.py")):
        parts = path.relative_to(ROOT / "minillada").with_suffix("").parts
        me = parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if node.col_offset > 0:
                problems.append(f"{where}: an import inside a function or class")
            names = (
                [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            )
            for name in names:
                if name and name.startswith("minillada.") and me in rank:
                    other = name.split(".")[1]
                    up = rank.get(other, 0) > rank[me]
                    sideways = rank.get(other) == rank[me] and other != me and rank[me] < 7
                    if up or sideways:
                        problems.append(f"{where}: {me} imports {name}")
    assert not problems, "\n".join(problems)
