"""bench/rl_compare.py: its quick run (every part tiny, on the shipped model and the real data path)
records the start with pass@k, each RL run's paired test against the start, and more SFT."""

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
         "--workdir", str(tmp_path / "runs")],
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
    assert record["more_sft"]["iters"] >= 1
