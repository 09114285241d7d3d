"""Resuming: one save and one load of the training state, for both weight formats."""

import torch

from minillada.checkpoints.folder import load_weights, save_checkpoint
from minillada.checkpoints.train_state import (
    load_train_state,
    load_training_checkpoint,
    save_train_state,
    save_training_checkpoint,
)
from minillada.models.llada import LLaDAModel, preset
from minillada.training.llada import LLaDATrainConfig, new_llada_state, train_llada
from minillada.training.loop import new_train_state, train


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path, char_run):
    tok, model_a, tcfg, batches, loss_fn = char_run()
    train(model_a, batches, loss_fn, tcfg, progress=False)

    _, model_b, _, _, _ = char_run()
    state = train(model_b, batches, loss_fn, tcfg, stop_after=17, progress=False)
    save_checkpoint(tmp_path / "ck", model_b, tok, state)

    _, model_c, _, _, _ = char_run(
        seed=99
    )  # different init: everything must come from the checkpoint
    load_weights(model_c, tmp_path / "ck")
    resumed = load_train_state(tmp_path / "ck", new_train_state(model_c, tcfg))
    assert resumed.iter_num == 17
    train(model_c, batches, loss_fn, tcfg, state=resumed, progress=False)
    for (name, a), c in zip(
        model_a.state_dict().items(), model_c.state_dict().values(), strict=True
    ):
        assert torch.equal(a, c), name


def test_resume_keeps_this_machines_adamw_kernel(tmp_path, char_run):
    # make_optimizer fuses AdamW where torch can; a checkpoint saved that way must still resume on a
    # machine whose optimizer cannot fuse (older torch), and vice versa.
    tok, model, tcfg, batches, loss_fn = char_run()
    state = train(model, batches, loss_fn, tcfg, stop_after=3, progress=False)
    saved = [g.get("fused") for g in state.optimizer.param_groups]  # True where torch can fuse
    save_checkpoint(tmp_path / "ck", model, tok, state)

    _, other, _, _, _ = char_run()
    fresh = new_train_state(other, tcfg)
    for group in fresh.optimizer.param_groups:  # as the fallback builds it
        group["fused"], group["foreach"] = None, None
    resumed = load_train_state(tmp_path / "ck", fresh)
    assert [g["fused"] for g in resumed.optimizer.param_groups] == [None, None], saved
    assert resumed.optimizer.param_groups[0]["lr"] == state.optimizer.param_groups[0]["lr"]
    train(other, batches, loss_fn, tcfg, state=resumed, stop_after=5, progress=False)
    assert resumed.iter_num == 3 + 5  # stop_after counts the iterations of this call


def test_lesson1_resume_restores_the_global_rng(tmp_path, char_run):
    # The loop draws from its own generator, but a model with dropout or a callback reads the
    # global RNG: a resumed run must see the same global random numbers as an uninterrupted one.
    tok, model, tcfg, batches, loss_fn = char_run()
    state = train(model, batches, loss_fn, tcfg, stop_after=2, progress=False)
    torch.manual_seed(2024)
    save_checkpoint(tmp_path / "ck", model, tok, state)
    expected = torch.rand(5)  # what the run would draw next
    torch.manual_seed(7)  # a new session: another global state
    load_train_state(tmp_path / "ck", new_train_state(model, tcfg))
    assert torch.equal(torch.rand(5), expected)


def llada_run(seed=0):
    cfg = preset(
        "tiny",
        d_model=32,
        n_heads=2,
        n_kv_heads=2,
        mlp_hidden_size=64,
        vocab_size=64,
        embedding_size=64,
        max_sequence_length=16,
    )
    model = LLaDAModel(cfg, generator=torch.Generator().manual_seed(seed))
    tcfg = LLaDATrainConfig(
        max_iters=4, batch_size=4, block_size=16, warmup_iters=1, eval_interval=0
    )
    data = torch.randint(0, 63, (500,), generator=torch.Generator().manual_seed(1))
    return model, tcfg, data


def test_llada_resume_keeps_this_machines_adamw_kernel(tmp_path):
    model, tcfg, data = llada_run()
    state = train_llada(model, data, 63, tcfg, stop_after=2, progress=False)
    save_training_checkpoint(tmp_path / "ck", model, state, tcfg)
    other, _, _ = llada_run(seed=5)
    fresh = new_llada_state(other, tcfg)
    for group in fresh.optimizer.param_groups:  # a machine where AdamW cannot fuse
        group["fused"], group["foreach"] = None, None
    resumed = load_training_checkpoint(tmp_path / "ck", other, fresh)
    assert [g["fused"] for g in resumed.optimizer.param_groups] == [None, None]
    assert resumed.iter_num == 2
    for p, q in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(p, q)
    train_llada(other, data, 63, tcfg, resumed, progress=False)
    assert resumed.iter_num == 4


def test_both_formats_write_the_same_training_files(tmp_path, char_run):
    tok, model, tcfg, batches, loss_fn = char_run()
    state = train(model, batches, loss_fn, tcfg, stop_after=1, progress=False)
    save_checkpoint(tmp_path / "char", model, tok, state)
    llada, ltcfg, data = llada_run()
    lstate = train_llada(llada, data, 63, ltcfg, stop_after=1, progress=False)
    save_training_checkpoint(tmp_path / "llada", llada, lstate, ltcfg)
    for folder in ("char", "llada"):
        names = {p.name for p in (tmp_path / folder).iterdir()}
        assert {"optimizer.safetensors", "trainer_state.json"} <= names, names
    save_train_state(tmp_path / "alone", state, extra={"note": 1})
    assert load_train_state(tmp_path / "alone", new_train_state(model, tcfg)).iter_num == 1
