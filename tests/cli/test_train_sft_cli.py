"""python -m minillada.cli.train_sft: both recipes fine-tune the shipped base model with the same
token positions per step, score the held-out items both ways and write a loadable folder."""

import json

import pytest

from minillada.checkpoints.hf import load_hf_checkpoint
from minillada.cli.train_sft import main
from minillada.data.tokenizer import LLaDATokenizer


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["llada", "variable"])
def test_cli_fine_tunes_scores_and_saves(tmp_path, capsys, tinyshakespeare, recipe):
    out, ship = tmp_path / "run", tmp_path / "shipped"
    record = main([
        "--recipe", recipe, "--out", str(out), "--iters", "2", "--warmup", "1", "--batch-size", "4",
        "--train-per-task", "20", "--held-out-per-task", "2", "--eval-interval", "1",
        "--eval-per-task", "1", "--gen-length", "16", "--threads", "1", "--ship", str(ship),
    ])  # fmt: skip
    assert record["recipe"] == recipe and record["held_out_curve"]["iter"] == [1, 2]
    saved = json.loads((ship / "training.json").read_text())
    assert saved["evaluation"]["fixed"]["all"]["n"] == saved["evaluation"]["variable"]["all"]["n"]
    assert saved["evaluation"]["fixed"]["all"]["mean_forward_passes"] == 16
    config = saved["train_config"]
    if recipe == "variable":  # as many token positions per step as LLaDA's padded batch
        assert config["batch"] == max(1, round(config["llada_positions_per_step"] / 128))
        assert config["token_positions_per_step"] == config["batch"] * 128
    model = load_hf_checkpoint(ship)
    assert LLaDATokenizer.from_folder(ship).mask_id == model.config.mask_token_id
    assert f"{recipe}: 100 training examples" in capsys.readouterr().out
