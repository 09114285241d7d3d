"""python -m minillada.cli.train_char: trains, saves and resumes lesson 1's model."""

import json

import pytest

from minillada.checkpoints.folder import load_checkpoint
from minillada.cli.train_char import main


@pytest.mark.slow
def test_cli_trains_saves_and_resumes(tmp_path, capsys, tinyshakespeare):
    out = tmp_path / "run"
    small = [
        "--n-layer",
        "1",
        "--n-head",
        "2",
        "--n-embd",
        "16",
        "--block-size",
        "32",
        "--batch-size",
        "4",
        "--eval-interval",
        "3",
        "--eval-windows",
        "4",
        "--final-samples",
        "1",
        "--final-windows",
        "8",
        "--threads",
        "1",
    ]
    main(["--out", str(out), "--iters", "6", "--save-every", "3", *small])
    config = json.loads((out / "config.json").read_text())
    assert config["iter_num"] == 6 and config["metrics"]["val_windows"] == 8
    assert (out / "optimizer.safetensors").is_file()
    with pytest.raises(SystemExit, match="--batch-size: the run has 4, this command 8"):
        main(["--out", str(out), "--iters", "9", "--save-every", "3", "--resume", *small,
              "--batch-size", "8"])  # fmt: skip
    main(["--out", str(out), "--iters", "9", "--save-every", "3", "--resume", *small])
    assert "resumed at iteration 6" in capsys.readouterr().out
    model, tok, config = load_checkpoint(out)
    assert config["iter_num"] == 9 and tok.vocab_size == 66
    assert model.config.block_size == 32
