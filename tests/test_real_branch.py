"""Lesson 7's real-weights branch, and lesson 8's 8B section, run where nobody has the weights:
on the project's rehearsal snapshots (``minillada.checkpoints.rehearsal``), in both folder layouts
a download can leave (``hf download --local-dir`` and the hub cache), with MINILLADA_REHEARSAL=1.

nbval runs the same lessons through their stand-in branch; these runs fail if any cell takes it.
Every cell must run; the outputs are not compared (they are the rehearsal's random numbers).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from minillada.checkpoints.rehearsal import REHEARSAL_ENV, write_rehearsals

ROOT = Path(__file__).resolve().parents[1]
LESSON7 = ROOT / "notebooks" / "07_released_weights.ipynb"
LESSON8 = ROOT / "notebooks" / "08_fast_sampling.ipynb"
NAMES = ("iLLaDA-8B-Instruct", "iLLaDA-8B-Base", "LLaDA-8B-Instruct")
# (folder layout, variant): variant 1 has a multi-token </think>, EOS lists and a stored tied head
SETUPS = {"local-dir": ("local", 0), "hub-cache": ("hub-cache", 1)}


@pytest.fixture(scope="module", params=list(SETUPS))
def weights(request, tmp_path_factory):
    layout, variant = SETUPS[request.param]
    root = tmp_path_factory.mktemp(f"weights-{request.param}")
    write_rehearsals(root, layout, variant, NAMES)
    return root


def _execute(nb: nbformat.NotebookNode, env: dict[str, str], monkeypatch) -> list[str]:
    """Run ``nb`` in a fresh kernel with ``env`` added to the environment; each code cell's text
    output (stdout, errors and plain-text results)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits os.environ
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    texts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts = []
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
        texts.append("".join(parts))
    return texts


def _rehearsal_env(weights: Path, tmp_path: Path) -> dict[str, str]:
    empty_cache = tmp_path / "hf-cache"
    empty_cache.mkdir()
    return {
        "MINILLADA_WEIGHTS_DIR": str(weights),
        REHEARSAL_ENV: "1",
        "HF_HUB_CACHE": str(empty_cache),  # only the rehearsals, never a real cache on this machine
        "CUDA_VISIBLE_DEVICES": "",  # the CPU branch of the opt-in, on any machine
    }


@pytest.mark.slow
def test_lesson7_runs_its_real_branch_on_rehearsal_snapshots(weights, tmp_path, monkeypatch):
    nb = nbformat.read(LESSON7, as_version=4)
    texts = _execute(nb, _rehearsal_env(weights, tmp_path), monkeypatch)
    everything = "\n".join(texts)
    assert "STAND-IN" not in everything, "a cell took the stand-in branch"
    for name in NAMES:  # every model the lesson opens is the rehearsal, and says so
        assert f"REHEARSAL    {name}" in everything, name
    assert "NOTE         " in everything  # the small architecture is reported, not refused
    assert "one process: 1, two processes: 2; the same 5 answers: True" in everything
    # nothing from a rehearsal lands where the real model's fingerprint belongs
    assert not (ROOT / "data" / "reproduction" / "iLLaDA-8B-Instruct.json").exists() or (
        "rehearsal" not in (ROOT / "data" / "reproduction" / "iLLaDA-8B-Instruct.json").read_text()
    )


def _section(nb: nbformat.NotebookNode, title: str) -> nbformat.NotebookNode:
    """The notebook's setup cell (its first code cell) and the cells of the section ``title``."""
    cells = nb.cells
    start = next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and title in c.source)
    end = next(
        (
            i
            for i in range(start + 1, len(cells))
            if cells[i].cell_type == "markdown" and cells[i].source.startswith("## ")
        ),
        len(cells),
    )
    setup = next(c for c in cells if c.cell_type == "code")
    out = nbformat.v4.new_notebook(metadata=nb.metadata)
    out.cells = [setup, *cells[start:end]]
    return out


@pytest.mark.slow
def test_lesson8_8b_section_runs_on_rehearsal_snapshots(weights, tmp_path, monkeypatch):
    nb = _section(nbformat.read(LESSON8, as_version=4), "## 6. On the 8B models")
    texts = _execute(nb, _rehearsal_env(weights, tmp_path), monkeypatch)
    everything = "\n".join(texts)
    assert "STAND-IN" not in everything and "REHEARSAL    iLLaDA-8B-Instruct" in everything
    assert "threshold 0.9 + cache" in everything


def test_the_stand_in_branch_is_what_nbval_runs():
    """The committed lesson 7 is executed through its stand-in branch (no weights, no opt-in), so
    nbval and these rehearsals together run both branches of every cell."""
    outputs = json.dumps([c.get("outputs", []) for c in nbformat.read(LESSON7, 4).cells])
    assert "STAND-IN" in outputs and "REHEARSAL" not in outputs
    assert os.environ.get(REHEARSAL_ENV) in (None, "", "0")
