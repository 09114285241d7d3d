"""Checkers for lesson 2 (notebooks/02_sampling.ipynb)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minillada.exercises import Case, ExerciseFailed, assert_same, check
from minillada.sampling.primitives import (
    NEG_INF,
    gumbel_argmax_with_noise,
    num_transfer_tokens,
    positions_to_reveal,
)
from minillada.sampling.remasking import margin_confidence, token_probability


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
        "Exercise 2.1",
        fn,
        num_transfer_tokens,
        cases,
        "minillada.sampling.primitives.num_transfer_tokens",
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
        "minillada.sampling.primitives.gumbel_argmax_with_noise",
    )


def low_confidence_step(
    x: torch.Tensor, logits: torch.Tensor, k: torch.Tensor | int, mask_id: int
) -> torch.Tensor:
    """The reference of exercise 2.3, one temperature-0 step of minillada.sampling.generate on a
    whole canvas: propose x0 = argmax, score it by its probability, reveal the ``k`` most
    confident masked positions of each row. x (B, L), logits (B, L, V)."""
    x0 = logits.argmax(dim=-1)  # (B, L)
    confidence = torch.where(x == mask_id, token_probability(logits, x0), NEG_INF)  # (B, L)
    return torch.where(positions_to_reveal(confidence, k), x0, x)


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
        "Exercise 2.3",
        fn,
        low_confidence_step,
        cases,
        "the step of minillada.sampling.generate.generate",
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
        Case(
            "logits above 710, where exp overflows even in float64",
            (torch.randn(1, 3, 5, generator=g, dtype=torch.float64) * 2000,),
        ),
    ]
    return check(
        "Exercise 2.4",
        fn,
        margin_confidence,
        cases,
        "minillada.sampling.remasking.margin_confidence",
        compare=_same_in_float64,
    )


def _same_in_float64(expected: torch.Tensor, got: torch.Tensor) -> None:
    """The right values, and in float64, as every confidence score of the sampler is."""
    assert_same(expected, got)
    if got.dtype != torch.float64:
        raise ExerciseFailed(
            f"result: expected a float64 tensor, got {got.dtype}; compute the softmax in "
            "float64 (logits.double()), as minillada's scores are."
        )
