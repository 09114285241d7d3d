"""python -m minillada.cli.train_rl: a run fine-tunes lesson 6's model with rewards, saves at
rollout boundaries, resumes to the same weights as an unbroken run (full and LoRA), scores the
held-out items both ways and writes a loadable folder; bad settings stop before any work."""

import json

import pytest
import torch

from minillada.checkpoints.folder import CheckpointError
from minillada.checkpoints.hf import load_hf_checkpoint
from minillada.checkpoints.shipped import ship_rl_run
from minillada.cli.train_rl import main
from minillada.data.tokenizer import LLaDATokenizer

SMALL = [
    "--prompts-per-step", "2", "--group-size", "3", "--inner-updates", "2", "--save-every", "2",
    "--gen-length", "8", "--block-length", "8", "--steps", "8", "--train-per-task", "10",
    "--held-out-per-task", "1", "--threads", "1", "--lr", "1e-3",
]  # fmt: skip


def weights(folder):
    return load_hf_checkpoint(folder).state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("lora", [[], ["--lora-rank", "2"]], ids=["full", "lora"])
def test_a_resumed_run_ends_where_an_unbroken_run_ends(tmp_path, tinyshakespeare, lora):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    record = main(["--out", str(whole), "--iters", "4", *SMALL, *lora, "--beta", "0.04"])
    main(["--out", str(broken), "--iters", "2", *SMALL, *lora, "--beta", "0.04",
          "--final-eval", "none"])  # fmt: skip
    # other settings than the run's would go on as another run: refused, the folder untouched
    before = (broken / "trainer_state.json").read_text()
    with pytest.raises(SystemExit, match="--prompts-per-step: the run has 2, this command 4; "
                       "--tasks: the run has .*only --iters may change"):  # fmt: skip
        main(["--out", str(broken), "--iters", "4", *SMALL, "--prompts-per-step", "4", "--tasks",
              "reverse", *lora, "--beta", "0.04", "--resume"])  # fmt: skip
    assert (broken / "trainer_state.json").read_text() == before
    resumed = main(["--out", str(broken), "--iters", "4", *SMALL, *lora, "--beta", "0.04",
                    "--resume"])  # fmt: skip
    assert resumed["history"]["loss"] == record["history"]["loss"]
    final = "merged" if lora else ""
    a, b = weights(whole / final), weights(broken / final)
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = json.loads((whole / final / "training.json").read_text())
    assert saved["evaluation"]["fixed"]["all"]["n"] == saved["evaluation"]["variable"]["all"]["n"]
    assert len(saved["history"]["reward"]) == 4 and saved["lora_rank"] == (2 if lora else 0)
    items = saved["evaluation"]["fixed"]["all"]["correct_items"]
    assert len(items) == saved["evaluation"]["fixed"]["all"]["n"]
    assert sum(items) == saved["evaluation"]["fixed"]["all"]["correct"]
    if not lora:  # the shipped form (data/checkpoints/rl_shakespeare): weights, tokenizer, record
        shipped = ship_rl_run(whole, tmp_path / "shipped")
        assert not (shipped / "optimizer.safetensors").exists()
        c = weights(shipped)
        assert all(torch.equal(a[k], c[k]) for k in a)
        assert json.loads((shipped / "training.json").read_text()) == saved
        tok = LLaDATokenizer.from_folder(shipped)
        assert tok.mask_id == LLaDATokenizer.from_folder(whole).mask_id
        renamed = ship_rl_run(whole, tmp_path / "renamed", command="python -m ... --out runs/x")
        assert json.loads((renamed / "training.json").read_text()) == {
            **saved, "command": "python -m ... --out runs/x"}  # fmt: skip


def test_shipping_refuses_an_unfinished_run(tmp_path):
    with pytest.raises(CheckpointError, match="is it a finished train_rl run"):
        ship_rl_run(tmp_path, tmp_path / "shipped")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--save-every", "3"], "must be a multiple of --inner-updates"),
        (["--tasks", "count,poetry"], "unknown"),
    ],
)
def test_bad_settings_stop_before_any_work(tmp_path, extra, message):
    with pytest.raises(SystemExit, match=message):
        main(["--out", str(tmp_path / "x"), *SMALL, *extra])


def test_settings_the_trainer_refuses_stop_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="group_size must be at least 2"):
        main(["--out", str(tmp_path / "x"), *SMALL, "--group-size", "1"])
    with pytest.raises(ValueError, match="the variable-length sampler records none"):
        main(["--out", str(tmp_path / "x"), *SMALL, "--sampler", "variable",
              "--estimator", "trajectory"])  # fmt: skip
    with pytest.raises(SystemExit, match="nothing to resume"):
        main(["--out", str(tmp_path / "x"), *SMALL, "--resume"])
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "f").write_text("")
    with pytest.raises(SystemExit, match="not empty: pass --resume"):
        main(["--out", str(tmp_path / "y"), *SMALL])
