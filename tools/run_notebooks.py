"""Execute notebooks top to bottom in place (full mode unless MINILLADA_QUICK=1 is set), with their
solutions, so the committed copies carry fresh outputs and execution counts 1..N.

    python tools/run_notebooks.py notebooks/01_char_masked_diffusion.ipynb   # lesson + its solution
    python tools/run_notebooks.py --all
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def run(path: Path, timeout: int) -> None:
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    nbformat.write(nb, path)
    print(f"{path.name}: {time.perf_counter() - t0:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--no-solutions", action="store_true")
    ap.add_argument("--timeout", type=int, default=1800)
    args = ap.parse_args()
    paths = (
        sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
        if args.all
        else [p.resolve() for p in args.notebooks]
    )
    os.environ.setdefault("TQDM_DISABLE", "1")  # stored outputs carry no progress-bar noise
    for p in paths:
        run(p, args.timeout)
        solution = p.parent / "solutions" / p.name
        if not args.no_solutions and solution.exists():
            run(solution, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
