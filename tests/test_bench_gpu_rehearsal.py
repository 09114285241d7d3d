"""bench/gpu_rehearsal.py, the full-size rehearsal of lesson 7's real-weights path meant for one
GPU run: its projection arithmetic, and its dry run (every step at a small size on the CPU) run as
the GPU run will be, as one command."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minillada.checkpoints.devices import positions_per_answer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_rehearsal.py"
STEPS = [
    "write", "inspect", "load", "fingerprint", "answer", "chat", "gsm8k", "forward",
    "load_base", "hellaswag_confidence", "hellaswag_mc", "cli", "projection",
]  # fmt: skip


def _script():
    spec = importlib.util.spec_from_file_location("gpu_rehearsal", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interpolation_and_projection():
    bench = _script()
    ms = {256: 20.0, 512: 30.0, 1024: 50.0}
    assert bench.interpolate(ms, 100) == 20.0  # below the measured lengths: the shortest's
    assert bench.interpolate(ms, 384) == pytest.approx(25.0)
    assert bench.interpolate(ms, 1024) == 50.0
    assert bench.interpolate(ms, 1536) == pytest.approx(70.0)  # the last slope, extended
    # noise made the longest pass look faster: it counts as the 512-token one, and the last
    # slope, extended, is flat, not downhill (it would reach 0 ms by 2,048 tokens)
    noisy = {256: 20.0, 512: 30.0, 1024: 25.0}
    assert bench.interpolate(noisy, 1024) == 30.0 and bench.interpolate(noisy, 2048) == 30.0
    rows = bench.project(noisy, 5.0)["gsm8k_instruct"]["by_answer_tokens"]
    minutes = [rows[k]["minutes_all"] for k in ("300", "600", "1000", "2048")]
    assert minutes == sorted(minutes) and len(set(minutes)) == 4
    # one 32-token block after a 200-token prompt: 32 passes over 232 tokens, each 20 ms
    assert bench.answer_ms(ms, 200, 32) == pytest.approx(32 * 20.0)
    flat = {256: 10.0, 2304: 10.0}
    out = bench.project(flat, 5.0)
    rows = out["gsm8k_instruct"]["by_answer_tokens"]
    for answer in ("300", "600", "1000", "2048"):
        passes = len(positions_per_answer(bench.GSM8K_PROMPT, int(answer), 32))
        assert rows[answer]["forward_passes"] == passes
        assert rows[answer]["minutes_all"] == pytest.approx(1319 * passes * 10.0 / 60_000, 0.01)
    assert out["hellaswag_confidence"]["minutes_all"] == pytest.approx(
        10_042 * 4 * 20 * 5.0 / 60_000, 0.01
    )


@pytest.mark.slow
def test_dry_run_records_every_step(tmp_path):
    out, workdir = tmp_path / "r.json", tmp_path / "w"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--workdir", str(workdir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "projected full GSM8K-Instruct" in done.stdout  # the readable summary
    record = json.loads(out.read_text())
    assert record["failed_steps"] == []
    assert record["environment"]["torch"]
    steps = record["steps"]
    assert list(steps) == STEPS
    for name, data in steps.items():
        assert "error" not in data, (name, data.get("error"))
        assert data["seconds"] >= 0 and data["host_peak_gib_so_far"] > 0, name

    write = steps["write"]
    assert len(write["shards"]) >= 3 and write["parameters"] > 0
    assert write["config_fields_as_small_rehearsal"], write["config_fields_missing"]
    assert write["tokenizer_tokens"] <= write["embedding_rows"]
    assert steps["inspect"]["ok"] and steps["inspect"]["note_shown"]  # a small architecture
    for load in ("load", "load_base"):
        assert steps[load]["real_branch"] and steps[load]["load_seconds"] > 0
    assert len(steps["fingerprint"]["top5_ids"]) == len(steps["fingerprint"]["positions"])

    answer = steps["answer"]
    assert 0 < answer["output_tokens"] <= 256 and answer["forward_passes"] > 0
    assert answer["tokens_per_second"] > 0 and answer["positions_processed"] > 0
    assert [t["forward_passes"] > 0 for t in steps["chat"]["turns"]] == [True, True]
    gsm8k = steps["gsm8k"]
    assert gsm8k["n"] == 5 and len(gsm8k["output_tokens"]) == 5 and gsm8k["tokens_per_second"] > 0
    forward = steps["forward"]["by_length"]
    assert sorted(map(int, forward)) == [64, 128, 256]
    assert all(v["ms"] > 0 for v in forward.values()) and steps["forward"]["hellaswag_pass_ms"] > 0
    for method in ("confidence", "mc"):
        hs = steps[f"hellaswag_{method}"]
        assert hs["n"] >= 4 and hs["seconds_per_item"] > 0

    cli = steps["cli"]
    assert cli["returncode"] == 0
    assert cli["result"]["n"] == 2 and cli["result"]["world_size"] == 1

    gsm8k_rows = steps["projection"]["gsm8k_instruct"]["by_answer_tokens"]
    minutes = [gsm8k_rows[k]["minutes_all"] for k in ("300", "600", "1000", "2048")]
    assert 0 < minutes[0] < minutes[1] < minutes[2] < minutes[3]
    assert steps["projection"]["hellaswag_confidence"]["minutes_all"] > 0
    assert not workdir.exists()  # the snapshots are deleted without --keep
