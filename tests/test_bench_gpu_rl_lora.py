"""bench/gpu_rl_lora.py: its dry run (every part at a tiny shape on the CPU) runs and records the
rollout, the old/reference estimates and the update, so the GPU run has been rehearsed."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_rl_lora.py"


def test_the_dry_run_records_every_part(tmp_path):
    out = tmp_path / "rl.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--repeats", "1", "--out", str(out)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    record = json.loads(out.read_text())
    for part in ("rollout", "old_and_reference", "update"):
        assert record[part]["median_s"] > 0
    assert record["lora_parameters"] > 0 and record["completions"] == 4
    assert record["seconds_per_rl_step_mu2"] > 0
