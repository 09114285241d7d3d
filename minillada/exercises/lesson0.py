"""Checker for lesson 0's warm-up exercise (notebooks/00_setup.ipynb)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minillada.exercises import Case, CheckResult, check


def count_masks(x: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Reference for Exercise 0.1: the number of mask tokens in each row, (B, L) -> (B,)."""
    return (x == mask_id).sum(dim=1)


def check_count_masks(fn: Callable) -> CheckResult:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (4, 10), generator=g)
    cases = [
        Case("a random batch with mask id 4", (x, 4)),
        Case("no masks at all", (torch.zeros(2, 6, dtype=torch.long), 9)),
        Case("every position masked", (torch.full((3, 5), 7), 7)),
    ]
    return check("Exercise 0.1", fn, count_masks, cases, "minillada.exercises.lesson0.count_masks")
