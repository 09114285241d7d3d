"""Checkers for lesson 2 (notebooks/02_sampling.ipynb)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minillada.exercises import Case, check
from minillada.generate import gumbel_argmax_with_noise, low_confidence_step
from minillada.remasking import margin_confidence
from minillada.sampling import num_transfer_tokens


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_transfer_schedule(fn: Callable) -> bool:
    """Exercise 2.1: fn(num_masked (B,), steps) -> (B, steps) tokens to reveal per step, as even as
    possible with the remainder on the first steps."""
    cases = [
        Case("10 masks over 4 steps -> 3, 3, 2, 2", (torch.tensor([10]), 4)),
        Case("three rows with 7, 8 and 9 masks over 3 steps", (torch.tensor([7, 8, 9]), 3)),
        Case("as many steps as masks: one per step", (torch.tensor([5]), 5)),
        Case("one step reveals everything", (torch.tensor([128, 64]), 1)),
        Case("32 masks over 5 steps (remainder 2)", (torch.tensor([32]), 5)),
    ]
    return check(
        "Exercise 2.1", fn, num_transfer_tokens, cases, "minillada.sampling.num_transfer_tokens"
    )


def check_gumbel_max(fn: Callable) -> bool:
    """Exercise 2.2: fn(logits, temperature, u) -> argmax(logits / T - log(-log u)) in float64;
    plain argmax at T = 0."""
    g = _seeded(3)
    logits = torch.randn(4, 6, 20, generator=g)
    u = torch.rand(4, 6, 20, generator=g, dtype=torch.float64)
    # Two uniforms that float32 cannot tell apart (both round to 1.0): only float64 picks id 2.
    near_one = torch.tensor([[0.5, 1 - 2e-10, 1 - 1e-10]], dtype=torch.float64)
    cases = [
        Case("temperature 1", (logits, 1.0, u)),
        Case("temperature 0.5 (sharper)", (logits, 0.5, u)),
        Case("temperature 2 (flatter)", (logits, 2.0, u)),
        Case("temperature 0 is a plain argmax of the logits (u is ignored)", (logits, 0.0, u)),
        Case(
            "float32 logits, float64 uniforms near 1: the noise must be computed in float64",
            (torch.zeros(1, 3), 1.0, near_one),
        ),
    ]
    return check(
        "Exercise 2.2",
        fn,
        gumbel_argmax_with_noise,
        cases,
        "minillada.generate.gumbel_argmax_with_noise",
    )


def check_low_confidence_step(fn: Callable) -> bool:
    """Exercise 2.3: fn(x, logits, k, mask_id) -> x with, in every row, the k masked positions whose
    argmax token is most probable set to that token."""
    g = _seeded(4)
    M = 9
    x = torch.randint(0, M, (3, 12), generator=g)
    x[torch.rand(3, 12, generator=g) < 0.6] = M
    logits = torch.randn(3, 12, M + 1, generator=g) * 3
    peaked = logits.clone()
    peaked[x != M, 0] = 50.0  # revealed positions are the most confident of all but must not change
    cases = [
        Case("k = 1 per row", (x, logits, 1, M)),
        Case("k = 3 per row", (x, logits, 3, M)),
        Case("k differs per row (tensor [2, 0, 1])", (x, logits, torch.tensor([2, 0, 1]), M)),
        Case(
            "already revealed positions have the most peaked logits but must not change",
            (x, peaked, 2, M),
        ),
    ]
    return check(
        "Exercise 2.3", fn, low_confidence_step, cases, "minillada.generate.low_confidence_step"
    )


def check_margin_confidence(fn: Callable) -> bool:
    """Exercise 2.4: fn(logits (B, W, V)) -> (B, W) float64 p1 - p2 of softmax(logits)."""
    g = _seeded(5)
    tie = torch.zeros(1, 2, 5)
    tie[0, 0, :2] = 3.0  # two equally likely best tokens: margin 0
    tie[0, 1, 4] = 40.0  # one certain token: margin ~1
    cases = [
        Case("random logits", (torch.randn(2, 7, 11, generator=g),)),
        Case("a tie at the top (margin 0) and a certain token (margin 1)", (tie,)),
        Case("large logits (use a stable softmax)", (torch.randn(1, 3, 5, generator=g) * 300,)),
    ]
    return check(
        "Exercise 2.4", fn, margin_confidence, cases, "minillada.remasking.margin_confidence"
    )
