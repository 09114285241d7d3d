"""The README's lesson table and lesson 0's course map come from one source, minillada.course."""

import re
from pathlib import Path

import nbformat

from minillada.course import LESSONS, lesson0_table, readme_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_table_is_written_from_the_course_map():
    assert readme_table() in (ROOT / "README.md").read_text(), (
        "README.md's lesson table differs from minillada.course.LESSONS: run "
        "python tools/course_map.py"
    )


def test_lesson_0_and_its_solution_show_the_same_map():
    for path in [
        ROOT / "notebooks" / "00_setup.ipynb",
        ROOT / "notebooks/solutions/00_setup.ipynb",
    ]:
        sources = [c.source for c in nbformat.read(path, as_version=4).cells]
        assert any(lesson0_table() in s for s in sources), (
            f"{path.name}'s course map differs from minillada.course.LESSONS: run "
            "python tools/course_map.py"
        )


def test_every_lesson_in_the_map_exists_and_every_notebook_is_in_the_map():
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [lesson.notebook for lesson in LESSONS] == notebooks
    assert [lesson.number for lesson in LESSONS] == list(range(len(LESSONS)))
    for lesson in LESSONS:
        assert re.fullmatch(r"(< 1|\d+\.\d) / (< 1|\d+\.\d)( \(.*\))?", lesson.minutes), lesson
