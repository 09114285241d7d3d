import json
from functools import partial

import pytest
import torch

from minillada.char_data import CharTokenizer, eval_windows, get_batch
from minillada.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_train_state,
    load_weights,
    save_checkpoint,
)
from minillada.likelihood import estimate_nelbo
from minillada.objectives import diffusion_loss
from minillada.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.training import TrainConfig, lr_at, new_train_state, train

TEXT = (
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 20
)


def setup(seed=0):
    tok = CharTokenizer.from_text(TEXT)
    data = tok.encode(TEXT)
    cfg = TinyTransformerConfig(
        vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32
    )
    torch.manual_seed(seed)
    model = TinyTransformer(cfg)
    tcfg = TrainConfig(
        max_iters=40, batch_size=8, lr=3e-3, warmup_iters=5, eval_interval=0, seed=seed
    )
    batches = partial(get_batch, data, 8, 32)
    loss_fn = partial(_loss, mask_id=tok.mask_id)
    return tok, model, tcfg, batches, loss_fn


def _loss(model, batch, generator, mask_id):
    return diffusion_loss(model, batch, mask_id, generator=generator)


def test_lr_schedule():
    assert lr_at(0, 100, 1.0, 0.1, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 0.1, 10) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 0.1, 10) == pytest.approx(0.55)  # cosine midpoint
    assert lr_at(100, 100, 1.0, 0.1, 10) == pytest.approx(0.1)


def test_training_reduces_the_loss():
    tok, model, tcfg, batches, loss_fn = setup()
    windows = eval_windows(tok.encode(TEXT), 32, max_windows=16)
    before = estimate_nelbo(model, windows, tok.mask_id, samples=8).nats
    tcfg.max_iters = 100
    train(model, batches, loss_fn, tcfg, progress=False)
    after = estimate_nelbo(model, windows, tok.mask_id, samples=8).nats
    assert before > 3.0 and after < before - 0.3, (before, after)


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path):
    tok, model_a, tcfg, batches, loss_fn = setup()
    train(model_a, batches, loss_fn, tcfg, progress=False)

    _, model_b, _, _, _ = setup()
    state = train(model_b, batches, loss_fn, tcfg, stop_after=17, progress=False)
    save_checkpoint(tmp_path / "ck", model_b, tok, state)

    _, model_c, _, _, _ = setup(seed=99)  # different init: everything must come from the checkpoint
    load_weights(model_c, tmp_path / "ck")
    resumed = load_train_state(tmp_path / "ck", new_train_state(model_c, tcfg))
    assert resumed.iter_num == 17
    train(model_c, batches, loss_fn, tcfg, state=resumed, progress=False)
    for (name, a), c in zip(
        model_a.state_dict().items(), model_c.state_dict().values(), strict=True
    ):
        assert torch.equal(a, c), name


def test_resume_keeps_this_machines_adamw_kernel(tmp_path):
    # make_optimizer fuses AdamW where torch can; a checkpoint saved that way must still resume on a
    # machine whose optimizer cannot fuse (older torch), and vice versa.
    tok, model, tcfg, batches, loss_fn = setup()
    state = train(model, batches, loss_fn, tcfg, stop_after=3, progress=False)
    assert all(g["fused"] for g in state.optimizer.param_groups)  # torch >= 2.4 on the CPU
    save_checkpoint(tmp_path / "ck", model, tok, state)

    _, other, _, _, _ = setup()
    fresh = new_train_state(other, tcfg)
    for group in fresh.optimizer.param_groups:  # as the fallback builds it
        group["fused"], group["foreach"] = None, None
    resumed = load_train_state(tmp_path / "ck", fresh)
    assert [g["fused"] for g in resumed.optimizer.param_groups] == [None, None]
    assert resumed.optimizer.param_groups[0]["lr"] == state.optimizer.param_groups[0]["lr"]
    train(other, batches, loss_fn, tcfg, state=resumed, stop_after=5, progress=False)
    assert resumed.iter_num == 3 + 5  # stop_after counts the iterations of this call


def test_checkpoint_roundtrip_and_files(tmp_path):
    tok, model, *_ = setup()
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


def test_checkpoint_that_does_not_match_the_model(tmp_path):
    tok, model, *_ = setup()
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


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)
    tok, model, *_ = setup()
    save_checkpoint(tmp_path / "ck", model, tok)
    with pytest.raises(CheckpointError, match="without state"):
        load_train_state(tmp_path / "ck", new_train_state(model, TrainConfig()))
