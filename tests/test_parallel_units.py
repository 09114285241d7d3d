"""The root conftest's units of parallel work (pytest-xdist): a worker runs each unit whole, so
what shares state on disk must share a unit."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _root_conftest():
    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_lesson_and_its_solution_are_one_unit_and_lessons_are_apart():
    group = _root_conftest()._group
    lessons = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    units = set()
    for lesson in lessons:
        name = f"notebooks/{lesson.name}::Cell 3"
        assert group(name) == group(f"notebooks/solutions/{lesson.name}::Cell 0"), lesson.name
        units.add(group(name))
    assert len(units) == len(lessons)
    assert (
        group("tests/sampling/test_generate.py::test_x[a::b]") == "tests/sampling/test_generate.py"
    )


def test_every_test_that_runs_a_lesson_in_the_checkout_joins_that_lessons_unit():
    """A test that executes a lesson file (nbclient, not nbval) writes where the lesson writes."""
    module = _root_conftest()
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        text = path.read_text()
        lessons = set(re.findall(r"\b(\d\d)_[a-z_]+\.ipynb", text))
        if path.name == Path(__file__).name or "NotebookClient(" not in text or not lessons:
            continue
        name = path.relative_to(ROOT).as_posix()
        assert module._RUNS_IN_PLACE.get(name) in {f"lesson{n}" for n in lessons}, (
            f"{name} executes lessons {sorted(lessons)}: name it in _RUNS_IN_PLACE in "
            "conftest.py with the unit of the lesson whose runs/ folders it writes"
        )
