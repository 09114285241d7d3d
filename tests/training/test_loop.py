"""The one training loop: it trains, its step is pluggable, it evaluates on schedule."""

import pytest
import torch

from minillada.diffusion.likelihood import estimate_nelbo
from minillada.training.loop import loss_step, train, train_loop
from minillada.training.schedules import lr_at


def test_lr_schedule():
    assert lr_at(0, 100, 1.0, 0.1, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 0.1, 10) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 0.1, 10) == pytest.approx(0.55)  # cosine midpoint
    assert lr_at(100, 100, 1.0, 0.1, 10) == pytest.approx(0.1)


def test_training_reduces_the_loss(char_run):
    tok, model, tcfg, batches, loss_fn = char_run()
    windows = torch.cat([batches(torch.Generator().manual_seed(s)) for s in (0, 1)])  # (16, 32)
    before = estimate_nelbo(model, windows, tok.mask_id, samples=8).nats
    tcfg.max_iters = 100
    train(model, batches, loss_fn, tcfg, progress=False)
    after = estimate_nelbo(model, windows, tok.mask_id, samples=8).nats
    assert before > 3.0 and after < before - 0.3, (before, after)


def test_train_is_train_loop_with_the_loss_step(char_run):
    _, a, tcfg, batches, loss_fn = char_run()
    _, b, _, _, _ = char_run()
    sa = train(a, batches, loss_fn, tcfg, stop_after=5, progress=False)
    sb = train_loop(b, loss_step(batches, loss_fn), tcfg, stop_after=5, progress=False)
    assert sa.history["loss"] == sb.history["loss"] and sa.iter_num == sb.iter_num == 5
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)  # the same operations in the same order


def test_a_custom_step_and_the_evaluation_schedule(char_run):
    _, model, tcfg, batches, _ = char_run()
    tcfg.max_iters, tcfg.eval_interval = 7, 3
    calls = []

    def step(m, state):  # any step: here a plain squared-weight loss
        loss = sum((p**2).sum() for p in m.parameters())
        loss.backward()
        calls.append(state.iter_num)
        return loss.item()

    state = train_loop(model, step, tcfg, evaluate=lambda m: 1.0, progress=False)
    assert calls == list(range(7))
    assert state.history["val_iter"] == [3, 6, 7]  # every 3 iterations, and at the end
    assert state.history["lr"][0] == pytest.approx(tcfg.learning_rate(0))
    assert state.history["loss"][-1] < state.history["loss"][0]  # weight decay and the loss shrink
    assert not model.training
