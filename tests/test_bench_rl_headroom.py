"""bench/rl_headroom.py: its quick run scores greedy and pass@k per temperature on the shipped model
and the real data path, and the counts agree with each other."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "rl_headroom.py"


def test_the_quick_run_records_pass_at_k_beside_greedy(tmp_path, tinyshakespeare):
    out = tmp_path / "headroom.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--temperatures", "0.5,1"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    record = json.loads(out.read_text())
    assert record["n"] == 2 and record["k"] == 2 and set(record["temperatures"]) == {"0.5", "1.0"}
    for r in record["temperatures"].values():
        # pass@k = greedy + (right only in some sample) - (right only greedy)
        assert r["pass_at_k"] == record["greedy"] + r["pass_not_greedy"] - r["greedy_not_pass"]
        assert 0 <= r["one_answer"] <= 1
        counts = ("pass_at_k", "pass_not_greedy", "greedy_not_pass")
        assert all(isinstance(r[c], int) for c in counts)
    assert "| 0.5 |" in out.with_suffix(".md").read_text()


def test_the_variable_length_sampler_on_development_items(tmp_path, tinyshakespeare):
    out = tmp_path / "headroom.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--temperatures", "0.6",
         "--sampler", "variable", "--items", "development"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    record = json.loads(out.read_text())
    assert (record["sampler"], record["items"], record["n"]) == ("variable", "development", 2)
    r = record["temperatures"]["0.6"]
    assert r["pass_at_k"] == record["greedy"] + r["pass_not_greedy"] - r["greedy_not_pass"]
    assert "development (not held-out)" in out.with_suffix(".md").read_text()


def test_a_temperature_of_zero_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("rl_headroom", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = [str(SCRIPT), "--out", str(tmp_path / "h.json"), "--temperatures", "0.3,0"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(module, "load_hf_checkpoint", None)  # reached only after the check
    with pytest.raises(SystemExit, match="must all be > 0"):
        module.main()
