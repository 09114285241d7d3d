"""bench/rl_compare.py: its quick run (every part tiny, on the shipped model and the real data path)
records the start with pass@k, each RL run's paired test against the start, and more SFT."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "rl_compare.py"


@pytest.mark.slow
def test_the_quick_run_records_every_comparison(tmp_path, tinyshakespeare):
    out = tmp_path / "rl.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(out),
         "--workdir", str(tmp_path / "runs"), "--sft-seconds", "0.5"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    record = json.loads(out.read_text())
    n = record["start"]["fixed"]["all"]["n"]
    assert record["start"]["pass_at_k"]["n"] == n and record["start"]["pass_at_k"]["k"] == 2
    assert set(record["rl"]) == {"grpo_seed0", "wd1_seed0"}
    for run in [*record["rl"].values(), record["more_sft"]]:
        for sampler in ("fixed", "variable"):
            test = run["against_start"][sampler]
            assert 0 < test["p_two_sided"] <= 1 and 0 < test["p_start_worse"] <= 1
    assert record["more_sft"]["iters"] >= 1 and record["more_sft"]["target_seconds"] == 0.5
    report = out.with_suffix(".md").read_text()
    assert "## Paired tests against the start" in report and "wd1_seed0" in report
    assert "## Paired tests against more SFT" in report

    # a new RL setting on the same baselines, with a seed named: only its own run is trained
    again = tmp_path / "again.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(again),
         "--workdir", str(tmp_path / "runs_trajectory"), "--methods", "grpo", "--seeds", "5,",
         "--baselines-from", str(out), "--", "--estimator", "trajectory"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    second = json.loads(again.read_text())
    assert second["start"] == record["start"] and second["more_sft"] == record["more_sft"]
    assert "--estimator trajectory" in second["rl"]["grpo_seed5"]["command"]
    assert "--seed 5" in second["rl"]["grpo_seed5"]["command"]
    assert not (tmp_path / "runs_trajectory" / "sft_more").exists()
    assert "reused from" in again.with_suffix(".md").read_text()


def _bench_module():
    spec = importlib.util.spec_from_file_location("rl_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_waiting_for_a_run_trained_elsewhere_ends_when_it_finishes_or_times_out(tmp_path):
    wait_for = _bench_module().wait_for
    done = tmp_path / "done.json"
    done.write_text("{}")
    wait_for(done, 1.0)  # already there: returns at once
    with pytest.raises(SystemExit, match="did not appear within"):
        wait_for(tmp_path / "never.json", 0.1)
