"""Checkers for lesson 4 (notebooks/04_subwords_and_llada_blocks.ipynb)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minillada.data.bpe import merge_pair
from minillada.data.subword import bits_per_char
from minillada.exercises import Case, CheckResult, check
from minillada.models.llada import RMSNorm
from minillada.models.rope import apply_rope, rope_tables


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    norm = RMSNorm(weight.shape[0], eps).to(weight.dtype)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


def check_rms_norm(fn: Callable) -> CheckResult:
    """Exercise 4.1: fn(x, weight, eps) -> RMSNorm(x): normalise in float32, cast back to x's dtype,
    then multiply by weight."""
    g = _seeded(0)
    x = torch.randn(2, 5, 16, generator=g) * 3
    w = 1 + 0.1 * torch.randn(16, generator=g)
    cases = [
        Case("float32 input, random weight", (x, w, 1e-5)),
        Case("a large eps changes the result", (x * 1e-3, w, 1e-2)),
        Case(
            "bfloat16 input and weight: cast back to bf16 *before* the weight multiply",
            (x.bfloat16(), w.bfloat16(), 1e-5),
        ),
    ]
    return check("Exercise 4.1", fn, _rms_norm_reference, cases, "minillada.models.llada.RMSNorm")


def _rope_reference(x: torch.Tensor, theta: float) -> torch.Tensor:
    cos, sin = rope_tables(x.shape[-2], x.shape[-1], theta)
    return apply_rope(x, cos, sin)


def check_rope(fn: Callable) -> CheckResult:
    """Exercise 4.2: fn(x, theta) -> x (B, H, L, Dh) rotated by position, rotate-half layout."""
    g = _seeded(1)
    cases = [
        Case("(2, 3, 8, 16), theta = 10000", (torch.randn(2, 3, 8, 16, generator=g), 10_000.0)),
        Case("LLaDA-8B's theta = 500000", (torch.randn(1, 2, 12, 8, generator=g), 500_000.0)),
        Case("position 0 is left unrotated", (torch.randn(1, 1, 1, 4, generator=g), 10_000.0)),
    ]
    return check("Exercise 4.2", fn, _rope_reference, cases, "minillada.models.rope.apply_rope")


def check_merge_pair(fn: Callable) -> CheckResult:
    """Exercise 4.3: fn(ids, pair, new_id) -> ids with every occurrence of pair, scanned left to
    right without overlaps, replaced by new_id."""
    cases = [
        Case("one occurrence in the middle", ([104, 101, 108, 108, 111], (108, 108), 256)),
        Case("several occurrences", ([1, 2, 3, 1, 2, 1, 2], (1, 2), 300)),
        Case("overlapping run 'aaa': merge left first", ([97, 97, 97], (97, 97), 256)),
        Case("the pair does not occur", ([5, 6, 7], (6, 5), 256)),
        Case("empty and single-token inputs", ([], (1, 2), 256)),
        Case("a single token", ([1], (1, 2), 256)),
    ]
    return check("Exercise 4.3", fn, merge_pair, cases, "minillada.data.bpe.merge_pair")


def check_bits_per_char(fn: Callable) -> CheckResult:
    """Exercise 4.4: fn(nats_per_token, num_tokens, num_chars) -> bits per character."""
    cases = [
        Case("ln 2 nats per token, one char per token = 1 bit/char", (0.6931471805599453, 10, 10)),
        Case("3 nats/token, 2.5 chars/token", (3.0, 1000, 2500)),
        Case("a character model: tokens == characters", (1.5, 128, 128)),
    ]
    return check("Exercise 4.4", fn, bits_per_char, cases, "minillada.data.subword.bits_per_char")
