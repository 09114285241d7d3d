"""bench/rl_compare.py: its quick run (every part tiny, on the shipped model and the real data path)
records the start with pass@k, each RL run's paired test against the start, and more SFT; reuses
baselines; matches time alone; starts from another checkpoint with more SFT on several seeds."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "rl_compare.py"


@pytest.mark.slow
def test_the_quick_run_records_every_comparison(tmp_path, tinyshakespeare):
    out = tmp_path / "rl.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(out),
         "--workdir", str(tmp_path / "runs"), "--sft-iters", "3"],
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
    assert record["more_sft"]["iters"] == 3 and record["more_sft"]["target_from"] == "--sft-iters 3"
    report = out.with_suffix(".md").read_text()
    assert "## Paired tests against the start" in report and "wd1_seed0" in report
    assert "## Paired tests against more SFT" in report and "## What the rollouts held" in report
    run = record["rl"]["grpo_seed0"]
    assert run["rollouts"] == 1 and run["prompts_per_rollout"] == 2  # 2 iterations, 2 per rollout
    assert 0 <= run["groups_with_signal_per_rollout"] <= 2
    assert len(run["kl_per_token"]) == 2 and abs(run["kl_per_token"][0]) < 1e-6  # the start itself

    # a new RL setting on the same baselines, with a seed named: only its own run is trained
    again = tmp_path / "again.json"
    _main("--quick", "--threads", "1", "--out", str(again), "--workdir",
          str(tmp_path / "runs_trajectory"), "--methods", "grpo", "--seeds", "5,",
          "--baselines-from", str(out), "--", "--estimator", "trajectory")  # fmt: skip
    second = json.loads(again.read_text())
    assert second["start"] == record["start"] and second["more_sft"] == record["more_sft"]
    assert "--estimator trajectory" in second["rl"]["grpo_seed5"]["command"]
    assert "--seed 5" in second["rl"]["grpo_seed5"]["command"]
    assert not (tmp_path / "runs_trajectory" / "sft_more").exists()
    assert "reused from" in again.with_suffix(".md").read_text()

    # the same, with more SFT trained again for the RL setting's own time, both timed alone
    third = tmp_path / "third.json"
    _main("--quick", "--threads", "1", "--out", str(third), "--workdir",
          str(tmp_path / "runs_trajectory"), "--methods", "grpo", "--seeds", "5,",
          "--baselines-from", str(out), "--rl-probe-iters", "2", "--", "--estimator",
          "trajectory")  # fmt: skip
    matched = json.loads(third.read_text())
    probe, sft = matched["rl_probe"], matched["more_sft"]
    assert matched["start"] == record["start"] and probe["iters"] == 2
    assert sft["target_seconds"] == pytest.approx(probe["seconds_per_iter"] * matched["iters"])
    assert sft["iters"] == max(1, round(sft["target_seconds"] / sft["seconds_per_iter"]))
    assert matched["rl"]["grpo_seed5"] == second["rl"]["grpo_seed5"]  # reused, not retrained
    report = third.with_suffix(".md").read_text()
    assert "more SFT is trained again" in report and "timed alone" in report

    bench = _bench_module()

    # RL after more SFT: both continue from the first run's SFT model, more SFT on two seeds
    start, after = tmp_path / "runs" / "sft_more", tmp_path / "after.json"
    flags = ["--quick", "--threads", "1", "--workdir", str(tmp_path / "runs_after"), "--methods",
             "grpo", "--start", str(start), "--k", "0", "--sft-seeds", "1,2",
             "--rl-probe-iters", "1"]  # fmt: skip
    _main(*flags, "--out", str(after), "--sft-iters", "2")
    fourth = json.loads(after.read_text())
    assert fourth["start_path"] == str(start) and "train_sft" in fourth["start_made_by"]
    assert "pass_at_k" not in fourth["start"] and fourth["rl_probe"]["iters"] == 1
    assert f"--base {start}" in fourth["rl"]["grpo_seed0"]["command"]
    assert set(fourth["more_sft_runs"]) == {"seed1", "seed2"} and "more_sft" not in fourth
    for seed, run in fourth["more_sft_runs"].items():
        assert run["iters"] == 2 and f"--seed {seed[4:]}" in run["command"]
        assert f"--base {start}" in run["command"]
    pooled = fourth["rl_against_sft_seeds"]["grpo"]["variable"]
    assert (pooled["runs_a"], pooled["runs_b"]) == (1, 2)
    assert pooled["difference"] == pytest.approx(pooled["mean_a"] - pooled["mean_b"], abs=1e-12)
    report = after.with_suffix(".md").read_text()
    assert "not lesson 6's model" in report and "## Paired tests against more SFT, seed 2" in report
    assert "## Each method's seeds against more SFT's seeds" in report

    # more SFT by stored grades: the runs above, on top of the first record's SFT model, are the
    # baseline of a lesson-6 record (counted from lesson 6, tested against its start again)
    graded = tmp_path / "graded.json"
    _main("--quick", "--threads", "1", "--out", str(graded), "--workdir",
          str(tmp_path / "runs_trajectory"), "--methods", "grpo", "--seeds", "5,",
          "--baselines-from", str(out), "--sft-grades-from", str(after), "--", "--estimator",
          "trajectory")  # fmt: skip
    fifth = json.loads(graded.read_text())
    assert fifth["start"] == record["start"] and set(fifth["more_sft_runs"]) == {"seed1", "seed2"}
    for name, run in fifth["more_sft_runs"].items():
        assert (run["iters"], run["iters_on_top"]) == (3 + 2, 2)
        assert run["evaluation"] == fourth["more_sft_runs"][name]["evaluation"]
        assert run["against_start"] == bench.against(record["start"], run)
    assert fifth["rl"]["grpo_seed5"] == second["rl"]["grpo_seed5"]  # reused, not retrained
    assert fifth["rl_against_sft_seeds"]["grpo"]["fixed"]["runs_b"] == 2
    report = graded.with_suffix(".md").read_text()
    assert "then 2 more" in report and "by their stored grades" in report
    with pytest.raises(SystemExit, match="needs more-SFT runs"):  # the first record has one
        _main("--quick", "--threads", "1", "--out", str(tmp_path / "y.json"), "--workdir",
              str(tmp_path / "runs_trajectory"), "--methods", "grpo", "--seeds", "5,",
              "--baselines-from", str(out), "--sft-grades-from", str(out))  # fmt: skip

    # a finished SFT folder is reused only for the same run; another one stops before training
    again_after = tmp_path / "again_after.json"
    _main(*flags, "--out", str(again_after), "--sft-iters", "2")
    reused = json.loads(again_after.read_text())["more_sft_runs"]
    assert reused == {name: {**run, "reused_run": str(tmp_path / "runs_after" / f"sft_more_{name}")}
                      for name, run in fourth["more_sft_runs"].items()}  # fmt: skip
    assert "A finished run, reused" in again_after.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="holds another SFT run \\(2 iterations"):
        _main(*flags, "--out", str(tmp_path / "x.json"), "--sft-iters", "3")


def _main(*argv: str) -> None:
    """The script's main() in this process (a subprocess costs an interpreter and torch import
    each time); the thread count it sets is restored for the tests after it."""
    threads = torch.get_num_threads()
    try:
        with mock.patch.object(sys, "argv", ["rl_compare.py", *argv]):
            _bench_module().main()
    finally:
        torch.set_num_threads(threads)


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
