"""minillada's own checkpoint folder: round trip, the files, and clear errors."""

import json

import pytest
import torch

from minillada.checkpoints.folder import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from minillada.checkpoints.train_state import ResumeError, load_train_state
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.training.loop import TrainConfig, new_train_state


def test_checkpoint_roundtrip_and_files(tmp_path, char_run):
    tok, model, *_ = char_run()
    save_checkpoint(tmp_path / "ck", model, tok, extra={"note": "test"})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert config["model_class"] == "TinyTransformer" and config["note"] == "test"
    loaded, tok2, _ = load_checkpoint(tmp_path / "ck")
    assert tok2.chars == tok.chars
    x = torch.randint(0, tok.vocab_size, (2, 32))
    torch.testing.assert_close(loaded(x), model.eval()(x))


def test_checkpoint_that_does_not_match_the_model(tmp_path, char_run):
    tok, model, *_ = char_run()
    save_checkpoint(tmp_path / "ck", model, tok)
    other = TinyTransformer(
        TinyTransformerConfig(
            vocab_size=tok.vocab_size, block_size=32, n_layer=3, n_head=2, n_embd=48
        )
    )
    with pytest.raises(
        CheckpointError, match=r"(?s)do not match the model .*missing key blocks\.2"
    ):
        load_weights(other, tmp_path / "ck")


def test_not_a_checkpoint(tmp_path, char_run):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)
    tok, model, *_ = char_run()
    save_checkpoint(tmp_path / "ck", model, tok)
    with pytest.raises(ResumeError, match="without state"):
        load_train_state(tmp_path / "ck", new_train_state(model, TrainConfig()))
