"""Checkers for lesson 0's warm-up exercises (notebooks/00_setup.ipynb)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from minillada.data.tokenizer import pad_left
from minillada.exercises import Case, CheckResult, ExerciseFailed, check, run_experiment


def count_masks(x: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Reference for Exercise 0.1: the number of mask tokens in each row, (B, L) -> (B,)."""
    return (x == mask_id).sum(dim=1)


def check_count_masks(fn: Callable) -> CheckResult:
    """Exercise 0.1: fn(x (B, L), mask_id) -> (B,) counts of mask_id per row."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (4, 10), generator=g)
    cases = [
        Case("a random batch with mask id 4", (x, 4)),
        Case("no masks at all", (torch.zeros(2, 6, dtype=torch.long), 9)),
        Case("every position masked", (torch.full((3, 5), 7), 7)),
    ]
    return check("Exercise 0.1", fn, count_masks, cases, "minillada.exercises.lesson0.count_masks")


def _left_padded(sequences: list, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for Exercise 0.2: minillada.data.tokenizer.pad_left as a plain (ids, mask)."""
    batch = pad_left(sequences, pad_id)
    return batch.input_ids, batch.attention_mask


def check_left_pad(fn: Callable) -> CheckResult:
    """Exercise 0.2: fn(sequences: list of lists of ids, pad_id) -> (ids (B, L), attention_mask
    (B, L)), every row right-aligned, padding on the left, mask 1 on real tokens."""
    cases = [
        Case("three prompts of lengths 3, 1 and 2", ([[5, 6, 7], [8], [9, 10]], 0)),
        Case("equal lengths: no padding at all", ([[1, 2], [3, 4]], 0)),
        Case(
            "the pad id is also a token of a prompt (the mask tells them apart)",
            ([[2, 2, 3], [4]], 2),
        ),
        Case("one empty prompt: a row of padding", ([[1, 2, 3], []], 9)),
        Case("a single prompt", ([[7, 8, 9, 10]], 0)),
    ]
    return check(
        "Exercise 0.2",
        fn,
        _left_padded,
        cases,
        "minillada.data.tokenizer.pad_left",
        compare=_same_padding,
    )


def _same_padding(expected: tuple, got) -> None:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ExerciseFailed(f"result: expected a pair (ids, attention_mask), got {got!r}")
    for name, e, g in zip(("ids", "attention_mask"), expected, got, strict=True):
        if not torch.is_tensor(g) or tuple(g.shape) != tuple(e.shape):
            shape = tuple(g.shape) if torch.is_tensor(g) else type(g).__name__
            raise ExerciseFailed(
                f"{name}: expected a tensor of shape {tuple(e.shape)} (batch, longest prompt), "
                f"got {shape}"
            )
        if not torch.equal(g.long(), e):
            raise ExerciseFailed(
                f"{name}: expected\n{e}\n  got\n{g}\nEvery row ends at the last column: the "
                "padding goes on the left, so that the text to generate starts at the same column "
                "in every row."
            )


MASK_LENGTHS = (16, 256, 4096)
MASK_P = 0.5  # the masking probability of the experiment
MASK_ROWS = 1000  # rows per length


def check_mask_fraction_experiment(fn: Callable) -> CheckResult:
    """Exercise 0.3: fn(lengths) -> {L: standard deviation, over 1,000 rows, of the fraction of
    the L positions of a row that are masked with probability 0.5}. The pass line repeats the
    measurements and draws no conclusion: the lesson's discussion cell does.

    The learner draws their own random numbers, so the checker compares with the exact answer,
    sqrt(p (1 - p) / L), within what 1,000 rows allow: a standard deviation estimated from R rows
    has a relative standard error of about 1 / sqrt(2 (R - 1)) (2.2% at R = 1,000); 15% is seven
    of those, far from any honest run and far closer than any common mistake (a count instead of
    a fraction is off by a factor L, a variance by a factor of the spread itself)."""
    got = run_experiment("Exercise 0.3", fn, list(MASK_LENGTHS))
    if got is None:
        return CheckResult(False)
    exact = {L: math.sqrt(MASK_P * (1 - MASK_P) / L) for L in MASK_LENGTHS}
    for L in MASK_LENGTHS:
        try:
            value = float(got[L])
        except (TypeError, ValueError):
            raise ExerciseFailed(
                f"Exercise 0.3: length {L}: expected one number, got {got[L]!r}"
            ) from None
        if not abs(value - exact[L]) <= 0.15 * exact[L]:
            raise ExerciseFailed(
                f"Exercise 0.3: length {L}: expected a standard deviation near {exact[L]:.4f}, "
                f"got {value:.4g}. Measure the fraction of masked positions of each row (a number "
                "between 0 and 1), over 1,000 rows, then take the standard deviation of those "
                "fractions."
            )
    if all(abs(float(got[L]) - exact[L]) <= 1e-9 * exact[L] for L in MASK_LENGTHS):
        raise ExerciseFailed(
            "Exercise 0.3: expected a measurement, got the exact values to nine digits: 1,000 "
            "random rows give a standard deviation that is off by about 2%. Draw the masks and "
            "measure."
        )
    measured = ", ".join(f"{float(got[L]):.4f} (L = {L})" for L in MASK_LENGTHS)
    print(f"Exercise 0.3 passed: your spreads {measured} are within 15% of the exact values.")
    return CheckResult(True)
