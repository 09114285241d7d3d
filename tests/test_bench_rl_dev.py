"""bench/rl_dev.py: candidates scored on development items (not the held-out ones), each paired
with the start; the pick is the candidate with the most right answers with the variable sampler;
bad candidate lists are refused before any model loads."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "rl_dev.py"
START = ROOT / "data" / "checkpoints" / "instruct_shakespeare"


def test_the_quick_run_pairs_each_candidate_with_the_start(tmp_path, tinyshakespeare):
    out = tmp_path / "dev.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(out),
         f"again={START}"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    record = json.loads(out.read_text())
    assert record["n"] == 4 and record["pick"] == "again"
    again = record["candidates"]["again"]
    assert again["grades"] == record["start"]  # the start scored as a candidate: the same grades
    unchanged = {"run_only": 0, "start_only": 0, "p_two_sided": 1.0}
    assert again["against_start"]["variable"] == unchanged
    assert "| again |" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize(
    ("spec", "message"),
    [("t06", "write name=folder"), ("start=x", "used twice"), ("t06=/nowhere", "no config.json")],
)
def test_bad_candidates_are_refused_before_any_model_loads(spec, message):
    module_spec = importlib.util.spec_from_file_location("rl_dev", SCRIPT)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    with pytest.raises(SystemExit, match=message):
        module.candidates([spec])
