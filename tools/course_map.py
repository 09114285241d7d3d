"""Write the README's lesson table and lesson 0's course map from minillada.course.LESSONS.

    python tools/course_map.py            # rewrite both in place
    python tools/course_map.py --check    # exit 1 if either differs (tests/test_course_map.py)

Lesson 0's map is a markdown cell, so rewriting it needs no re-execution of the notebook (its
solved copy gets the same cell).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

from minillada.course import lesson0_table, readme_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LESSON0 = [
    ROOT / "notebooks" / "00_setup.ipynb",
    ROOT / "notebooks" / "solutions" / "00_setup.ipynb",
]
TABLE = re.compile(
    r"^\| lesson \| notebook \|.*?(?=\n\n)", re.M | re.S
)  # a table ends at a blank line


def replaced(text: str, table: str) -> str:
    found = TABLE.findall(text)
    if len(found) != 1:
        raise SystemExit(f"expected one lesson table, found {len(found)}")
    return TABLE.sub(lambda _: table, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    stale = []
    text = README.read_text()
    new = replaced(text, readme_table())
    if new != text:
        stale.append(README)
        if not args.check:
            README.write_text(new)
    for path in LESSON0:
        nb = nbformat.read(path, as_version=4)
        cells = [c for c in nb.cells if c.cell_type == "markdown" and TABLE.search(c.source)]
        if len(cells) != 1:
            raise SystemExit(f"{path}: expected one markdown cell with the course map")
        new = replaced(cells[0].source + "\n\n", lesson0_table()).rstrip("\n")
        if new != cells[0].source:
            stale.append(path)
            if not args.check:
                cells[0].source = new
                nbformat.write(nb, path)
    for path in stale:
        print(f"{'stale' if args.check else 'rewrote'}: {path.relative_to(ROOT)}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
