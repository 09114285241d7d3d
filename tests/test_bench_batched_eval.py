"""bench/batched_eval.py: its projection arithmetic, its GPU part's dry run (tiny, on the CPU, as
the one GPU command will run it) and its CPU part on a few items."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "batched_eval.py"


def _script():
    spec = importlib.util.spec_from_file_location("batched_eval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_projection_arithmetic():
    bench = _script()
    # 600 tokens = 19 blocks of 32; exact: 32 full passes of 10 ms per block, 1,319 problems
    assert bench.projection(10.0, 1.0, 1) == pytest.approx(1319 * 19 * 32 * 10.0 / 60_000)
    assert bench.projection(10.0, 1.0, 8) == pytest.approx(1319 / 8 * 19 * 320 / 60_000)
    # approximate, 4 tokens per window pass: 1 full pass + ceil(31 / 4) = 8 window passes
    assert bench.projection(10.0, 1.0, 1, tokens_per_window_pass=4) == pytest.approx(
        1319 * 19 * (10.0 + 8 * 1.0) / 60_000
    )


def _run(args: list[str], tmp_path: Path) -> dict:
    out = tmp_path / "r.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_the_gpu_part_dry_run(tmp_path):
    record = _run(["--gpu", "--dry-run", "--repeats", "1"], tmp_path)
    assert [p["batch"] for p in record["passes"]] == [1, 8, 32]
    assert all(
        p["full_ms"]["median"] > 0 and p["window_ms"]["median"] > 0 for p in record["passes"]
    )
    first = record["projection_minutes"][0]
    assert first["exact"] > first["approximate, 2 tokens per window pass (assumed)"] > 0


def test_the_cpu_part_on_a_few_items(tmp_path):
    record = _run(["--repeats", "1", "--limit", "6"], tmp_path)
    assert record["items"] == 6 and len(record["runs"]) == 6
    assert record["exact_identical_at_every_batch"] is True
    exact = [r for r in record["runs"] if r["sampler"] == "exact"]
    assert len({r["forward_passes_per_item"] for r in exact}) == 1  # the same passes per row
    assert "McNemar exact p" in record["paired"]["line"]
