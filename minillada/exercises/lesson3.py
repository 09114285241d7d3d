"""Checkers for lesson 3 (notebooks/03_likelihood_and_autoregression.ipynb)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minillada.diffusion.likelihood import l_estimator_terms, spread_mask_counts
from minillada.evaluation.autoregressive import token_log_probs
from minillada.exercises import Case, CheckResult, assert_same, check
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_spread_mask_counts(fn: Callable) -> CheckResult:
    """Exercise 3.1: fn(answer_len, batch_size, k) -> (b,) long, LLaDA's stratified mask counts."""
    cases = [
        Case("L = 5, b = 4, k = 3: wraps past L (and 5.5 rounds to 6)", (5, 4, 3)),
        Case("L = 8, b = 8, k = 1: one row per count 1..8", (8, 8, 1)),
        Case("L = 64, b = 16, k = 60", (64, 16, 60)),
        Case("a one-token answer: always 1", (1, 4, 1)),
        Case("more rows than tokens: L = 3, b = 7, k = 2", (3, 7, 2)),
        Case("L = 4, b = 8, k = 2: 2.5 and 4.5 round half to even (torch.round)", (4, 8, 2)),
    ]
    return check(
        "Exercise 3.1",
        fn,
        spread_mask_counts,
        cases,
        "minillada.diffusion.likelihood.spread_mask_counts",
    )


def _tiny_causal(seed: int) -> TinyTransformer:
    cfg = TinyTransformerConfig(
        vocab_size=7, block_size=12, n_layer=2, n_head=2, n_embd=16, causal=True
    )
    model = TinyTransformer(cfg, generator=torch.Generator().manual_seed(seed))
    for p in model.parameters():  # larger weights, so the predictions are far from uniform
        p.data.mul_(10)
    return model.eval()


def _reference_sequence_log_prob(model, x, bos_id):
    return token_log_probs(model, x, bos_id).sum(dim=1)


def check_sequence_log_prob(fn: Callable) -> CheckResult:
    """Exercise 3.2: fn(model, x, bos_id) -> (N,) exact log p(x) under a causal model, nats."""
    g = _seeded(3)
    model = _tiny_causal(0)
    cases = [
        Case("3 sequences of 12 tokens", (model, torch.randint(0, 6, (3, 12), generator=g), 6)),
        Case("one token: log p(x_1 | BOS)", (model, torch.tensor([[2]]), 6)),
        Case("5 sequences of 4 tokens", (model, torch.randint(0, 6, (5, 4), generator=g), 6)),
    ]
    return check(
        "Exercise 3.2",
        lambda *a: fn(*a).double(),
        _reference_sequence_log_prob,
        cases,
        "minillada.evaluation.autoregressive.token_log_probs(...).sum(dim=1)",
        compare=lambda e, got: _close(e, got),
    )


def _close(expected, got):
    assert_same(expected, got, atol=1e-4, rtol=1e-4)


def check_l_estimator_terms(fn: Callable) -> CheckResult:
    """Exercise 3.3: fn(logits, answer, masked) -> (b,) float64, (L / l_i) sum_masked CE."""
    g = _seeded(4)
    b, L, V = 4, 6, 5
    logits = torch.randn(b, L, V, generator=g)
    answer = torch.randint(0, V, (L,), generator=g)
    counts = torch.tensor([1, 2, 4, 6])
    masked = torch.rand(b, L, generator=g).argsort(dim=1).argsort(dim=1) < counts[:, None]
    one = torch.zeros(1, L, dtype=torch.bool)
    one[0, 2] = True
    cases = [
        Case("4 rows masking 1, 2, 4 and 6 of 6 answer tokens", (logits, answer, masked)),
        Case("one masked token weighs L = 6", (logits[:1], answer, one)),
        Case(
            "a one-token answer: exactly -log p(answer)",
            (logits[:2, :1], answer[:1], torch.ones(2, 1, dtype=torch.bool)),
        ),
    ]
    return check(
        "Exercise 3.3",
        lambda *a: fn(*a).double(),
        l_estimator_terms,
        cases,
        "minillada.diffusion.likelihood.l_estimator_terms",
        compare=lambda e, got: _close(e, got),
    )
