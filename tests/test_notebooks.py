"""Notebook hygiene: executed top to bottom, lessons and solutions in step, no machine paths.

nbval itself (pytest's --nbval-lax over notebooks/) re-runs every notebook in quick mode; these
checks cover what a re-run does not show.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("[0-9][0-9]_*.ipynb"))


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def is_exercise(cell: dict) -> bool:
    return "exercise" in cell.get("metadata", {}).get("tags", [])


def test_there_are_lessons():
    assert LESSONS, "no notebooks/NN_topic.ipynb found"


@pytest.mark.parametrize("path", LESSONS + SOLUTIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_executed_top_to_bottom(path):
    code = [c for c in cells(path) if c["cell_type"] == "code" and source(c).strip()]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name}: execution counts {counts[:12]}...; restart the kernel and run all "
        f"(python tools/run_notebooks.py {path.relative_to(ROOT)})"
    )
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} was committed with an error output"


@pytest.mark.parametrize("path", LESSONS + SOLUTIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_machine_paths_in_outputs(path):
    text = json.dumps([c.get("outputs", []) for c in cells(path) if c["cell_type"] == "code"])
    found = re.search(r"/(work|tmp|root|home|Users)/[A-Za-z0-9_.-]+", text)
    assert not found, (
        f"{path.name} shows the absolute path {found.group(0)!r}; print repo-relative paths"
    )


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name)
def test_lesson_matches_its_solution_outside_exercises(lesson):
    solution = ROOT / "notebooks" / "solutions" / lesson.name
    assert solution.is_file(), f"{lesson.name} has no solved copy in notebooks/solutions/"
    a, b = cells(lesson), cells(solution)
    assert len(a) == len(b), f"{lesson.name}: {len(a)} cells, solution has {len(b)}"
    exercises = 0
    for i, (ca, cb) in enumerate(zip(a, b, strict=True)):
        assert is_exercise(ca) == is_exercise(cb), f"{lesson.name} cell {i}: exercise tags differ"
        if is_exercise(ca):
            exercises += 1
            assert "NotImplementedError" in source(ca), f"{lesson.name} cell {i}: stub must raise"
            assert "NotImplementedError" not in source(cb), f"solution cell {i} is not solved"
        else:
            assert source(ca) == source(cb), f"{lesson.name} cell {i} differs from the solution"
    assert exercises >= 3, f"{lesson.name} has {exercises} exercises; lessons have at least 3"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_solutions_pass_their_checks(solution):
    outputs = json.dumps(
        [c.get("outputs", []) for c in cells(solution) if c["cell_type"] == "code"]
    )
    assert "not attempted yet" not in outputs, (
        f"{solution.name}: an exercise checker says not attempted"
    )
    n_ex = sum(is_exercise(c) for c in cells(solution))
    assert len(re.findall(r"Exercise \d+\.\d+ passed", outputs)) >= n_ex


@pytest.mark.parametrize("path", LESSONS + SOLUTIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_nbval_markers_stand_on_their_own_lines(path):
    """nbval honours ``# NBVAL_CHECK_OUTPUT`` only on a line of its own: a marker at the end of a
    code line checks nothing. And every notebook has at least one cell whose output nbval checks."""
    checked, misplaced = 0, []
    for i, cell in enumerate(cells(path)):
        if cell["cell_type"] != "code":
            continue
        lines = source(cell).splitlines()
        if any(line.strip() == "# NBVAL_CHECK_OUTPUT" for line in lines):
            checked += 1
        misplaced += [
            f"cell {i}: {line.strip()[:70]!r}"
            for line in lines
            if "NBVAL_CHECK_OUTPUT" in line and line.strip() != "# NBVAL_CHECK_OUTPUT"
        ]
    assert not misplaced, f"{path.name}: markers nbval ignores: {misplaced}; one per line, alone"
    assert checked, f"{path.name}: no cell is checked by nbval (a line: # NBVAL_CHECK_OUTPUT)"
