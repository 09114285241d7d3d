"""Lesson 1: the t-estimator of the negative ELBO, a validation bound with a standard error."""

import math

import pytest
import torch

from minillada.diffusion.likelihood import estimate_nelbo, nelbo_per_sequence
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig


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
    assert est.n == 64 and est.detail == "64 sequences x 16 samples"
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
