"""Checkers for lesson 1 (notebooks/01_char_masked_diffusion.ipynb)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minillada.diffusion.masking import apply_mask
from minillada.diffusion.objectives import masked_diffusion_loss
from minillada.exercises import Case, CheckResult, check
from minillada.sampling.primitives import NEG_INF, positions_to_reveal


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_apply_mask(fn: Callable) -> CheckResult:
    """Exercise 1.1: fn(x0, t, u, mask_id) -> (x_t, masked), masked = u < (1 - 1e-3) t + 1e-3."""
    g = _seeded(0)
    x0 = torch.randint(0, 65, (4, 16), generator=g)
    u = torch.rand(4, 16, generator=g)
    cases = [
        Case("4 rows at t = 0.1, 0.4, 0.7, 0.95", (x0, torch.tensor([0.1, 0.4, 0.7, 0.95]), u, 65)),
        Case(
            "t = 0 still masks with probability eps = 1e-3",
            (x0[:1], torch.zeros(1), torch.full((1, 16), 5e-4), 65),
        ),
        Case("t = 1 masks everything", (x0[:2], torch.ones(2), u[:2], 65)),
        Case(
            "u exactly at the threshold is NOT masked (strict <)",
            (x0[:1], torch.tensor([0.5]), torch.full((1, 16), 0.5 * (1 - 1e-3) + 1e-3), 7),
        ),
    ]
    return check("Exercise 1.1", fn, apply_mask, cases, "minillada.diffusion.masking.apply_mask")


def check_masked_diffusion_loss(fn: Callable) -> CheckResult:
    """Exercise 1.2: fn(logits, x0, masked, p_mask) -> scalar loss, sum(CE / p) / (B * L)."""
    g = _seeded(1)
    B, L, V = 3, 10, 7
    logits = torch.randn(B, L, V, generator=g)
    x0 = torch.randint(0, V, (B, L), generator=g)
    masked = torch.rand(B, L, generator=g) < 0.5
    p = torch.tensor([0.2, 0.5, 0.9])
    cases = [
        Case("random logits, about half the positions masked", (logits, x0, masked, p)),
        Case(
            "nothing masked: the loss is exactly 0",
            (logits, x0, torch.zeros(B, L, dtype=torch.bool), p),
        ),
        Case(
            "everything masked at p = 1: plain mean cross-entropy",
            (logits, x0, torch.ones(B, L, dtype=torch.bool), torch.ones(B)),
        ),
        Case(
            "one masked token at p = 0.01 weighs 100x",
            (logits[:1], x0[:1], torch.arange(L)[None] == 3, torch.tensor([0.01])),
        ),
    ]
    return check(
        "Exercise 1.2",
        fn,
        masked_diffusion_loss,
        cases,
        "minillada.diffusion.objectives.masked_diffusion_loss",
    )


def reveal_most_confident(
    x: torch.Tensor,
    candidates: torch.Tensor,
    confidence: torch.Tensor,
    k: torch.Tensor | int,
    mask_id: int,
) -> torch.Tensor:
    """The reference of exercise 1.3: in every row, reveal the ``k`` masked positions with the
    highest confidence (the library's ``positions_to_reveal``, with revealed positions ruled out).
    x, candidates: (B, L) ids; confidence: (B, L); k: int or (B,). Returns a new x."""
    masked = x == mask_id
    scores = torch.where(masked, confidence.double(), NEG_INF)  # revealed: never candidates
    return torch.where(positions_to_reveal(scores, k), candidates, x)


def check_reveal_most_confident(fn: Callable) -> CheckResult:
    """Exercise 1.3: fn(x, candidates, confidence, k, mask_id) -> x with the k most confident masked
    positions of each row set to their candidate."""
    g = _seeded(2)
    M = 9
    x = torch.randint(0, M, (3, 12), generator=g)
    x[torch.rand(3, 12, generator=g) < 0.6] = M
    candidates = torch.randint(0, M, (3, 12), generator=g)
    confidence = torch.rand(3, 12, generator=g)
    high_on_revealed = confidence.clone()
    high_on_revealed[x != M] = 2.0  # revealed positions must be ignored however confident
    cases = [
        Case("k = 1 per row", (x, candidates, confidence, 1, M)),
        Case("k = 2 per row", (x, candidates, confidence, 2, M)),
        Case(
            "k differs per row (tensor [1, 0, 3])",
            (x, candidates, confidence, torch.tensor([1, 0, 3]), M),
        ),
        Case(
            "already revealed positions have the highest confidence but must not change",
            (x, candidates, high_on_revealed, 1, M),
        ),
        Case(
            "confidences that are all negative (log-probabilities): a revealed position must never "
            "be a candidate, whatever its score",
            (x, candidates, confidence.log(), 2, M),
        ),
    ]
    return check(
        "Exercise 1.3",
        fn,
        reveal_most_confident,
        cases,
        "minillada.sampling.primitives.positions_to_reveal",
    )
