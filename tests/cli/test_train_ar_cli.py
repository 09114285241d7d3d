"""python -m minillada.cli.train_ar: trains, resumes and ships lesson 3's twin."""

import json

import pytest

from minillada.checkpoints.folder import load_checkpoint
from minillada.cli.train_ar import main


@pytest.mark.slow
def test_train_ar_cli_trains_resumes_and_ships(tmp_path, tinyshakespeare):

    out, ship = tmp_path / "run", tmp_path / "ship"
    small = ["--block-size", "16", "--n-layer", "1", "--n-head", "2", "--n-embd", "16"]
    common = ["--out", str(out), "--eval-interval", "1", "--eval-windows", "4", *small]
    main([*common, "--iters", "2", "--save-every", "1", "--threads", "1"])
    main([*common, "--iters", "3", "--resume", "--ship", str(ship)])
    model, tok, config = load_checkpoint(ship)
    assert model.config.causal and config["iter_num"] == 3 and config["bos_id"] == tok.mask_id
    curves = json.loads((ship / "curves.json").read_text())
    assert curves["ar"]["val_iter"] == [1, 2, 3] and "mdm" not in curves
    assert not (ship / "optimizer.safetensors").exists()
