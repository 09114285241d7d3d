import math

import pytest
import torch

from minillada.exercises import ExerciseFailed, lesson1
from minillada.likelihood import estimate_nelbo, nelbo_per_sequence
from minillada.masking import apply_mask
from minillada.objectives import masked_diffusion_loss
from minillada.sampling import (
    gumbel_argmax,
    num_transfer_tokens,
    reveal_most_confident,
    sample,
)
from minillada.tiny_transformer import TinyTransformer, TinyTransformerConfig


class Uniform(torch.nn.Module):
    """Predicts every token with probability 1/V: its NELBO is exactly log V per token."""

    def __init__(self, V):
        super().__init__()
        self.V = V
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, idx):
        return torch.zeros(*idx.shape, self.V) + self.dummy


def test_bound_of_uniform_model_is_log_v():
    V = 6
    x0 = torch.randint(0, V - 1, (64, 32), generator=torch.Generator().manual_seed(0))
    est = estimate_nelbo(Uniform(V), x0, mask_id=V - 1, samples=16)
    assert abs(est.nats - math.log(V)) < 3 * est.stderr + 1e-3
    assert est.num_sequences == 64 and est.samples_per_sequence == 16
    assert est.bits == pytest.approx(est.nats / math.log(2))


def test_estimator_is_reproducible_with_a_seed():
    cfg = TinyTransformerConfig(vocab_size=9, block_size=16, n_layer=1, n_head=2, n_embd=16)
    model = TinyTransformer(cfg)
    x0 = torch.randint(0, 8, (10, 16))
    assert estimate_nelbo(model, x0, 8, seed=3).nats == estimate_nelbo(model, x0, 8, seed=3).nats
    per_seq = nelbo_per_sequence(
        model, x0, 8, samples=4, generator=torch.Generator().manual_seed(0)
    )
    assert per_seq.shape == (10,) and per_seq.dtype == torch.float64


def test_num_transfer_tokens_matches_llada():
    assert num_transfer_tokens(torch.tensor([10]), 4).tolist() == [[3, 3, 2, 2]]
    assert num_transfer_tokens(torch.tensor([8, 9]), 4).tolist() == [[2, 2, 2, 2], [3, 2, 2, 2]]
    with pytest.raises(ValueError, match="larger than the number of masked tokens"):
        num_transfer_tokens(torch.tensor([3]), 4)


def test_gumbel_argmax_samples_the_softmax():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    g = torch.Generator().manual_seed(0)
    draws = gumbel_argmax(logits.expand(20_000, 3), 1.0, g)
    freq = torch.bincount(draws, minlength=3).float() / 20_000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2]), atol=0.015)
    assert gumbel_argmax(logits, 0.0).item() == 0


def test_reveal_most_confident_by_hand():
    M = 9
    x = torch.tensor([[M, 1, M, M]])
    candidates = torch.tensor([[4, 5, 6, 7]])
    confidence = torch.tensor([[0.2, 0.99, 0.7, 0.5]])  # position 1 is already revealed
    assert reveal_most_confident(x, candidates, confidence, 2, M).tolist() == [[M, 1, 6, 7]]


@pytest.mark.parametrize("order", ["random", "confidence"])
def test_sampler_fills_every_mask_and_keeps_the_prompt(order):
    cfg = TinyTransformerConfig(vocab_size=9, block_size=24, n_layer=1, n_head=2, n_embd=16)
    model = TinyTransformer(cfg)
    prompt = torch.tensor([1, 2, 3, 4])
    out = sample(
        model,
        mask_id=8,
        length=20,
        steps=5,
        num_samples=3,
        order=order,
        prompt=prompt,
        generator=torch.Generator().manual_seed(0),
        record=True,
    )
    assert out.tokens.shape == (3, 24)
    assert (out.tokens != 8).all()
    assert torch.equal(out.tokens[:, :4], prompt.expand(3, 4))
    masks_left = [(c == 8).sum(dim=1).tolist() for c in out.canvases]
    assert masks_left == [[20] * 3, [16] * 3, [12] * 3, [8] * 3, [4] * 3, [0] * 3]


def test_sampler_errors():
    cfg = TinyTransformerConfig(vocab_size=9, block_size=16, n_layer=1, n_head=2, n_embd=16)
    model = TinyTransformer(cfg)
    with pytest.raises(ValueError, match="exceeds the model's context of 16"):
        sample(model, 8, length=12, steps=4, prompt=torch.arange(5))
    with pytest.raises(ValueError, match="steps=20 is larger than the number of masked tokens"):
        sample(model, 8, length=10, steps=20)


def test_exercise_checkers_pass_the_reference_and_catch_mistakes(capsys):
    assert lesson1.check_apply_mask(apply_mask)
    assert lesson1.check_masked_diffusion_loss(masked_diffusion_loss)
    assert lesson1.check_reveal_most_confident(reveal_most_confident)

    def not_yet(*args):
        raise NotImplementedError("Exercise 1.2: ...")

    assert not lesson1.check_masked_diffusion_loss(not_yet)
    assert "not attempted yet" in capsys.readouterr().out

    def mean_over_masked(logits, x0, masked, p):  # the common mistake: normalise by #masked
        ce = torch.nn.functional.cross_entropy(logits[masked], x0[masked], reduction="none")
        return (ce / p[:, None].expand_as(masked)[masked]).sum() / masked.sum().clamp_min(1)

    with pytest.raises(ExerciseFailed, match="Exercise 1.2: case 1/4"):
        lesson1.check_masked_diffusion_loss(mean_over_masked)

    def crashes(*args):
        raise IndexError("boom")

    with pytest.raises(ExerciseFailed, match="raised IndexError: boom"):
        lesson1.check_reveal_most_confident(crashes)
