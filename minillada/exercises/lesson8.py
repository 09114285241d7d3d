"""Checkers for lesson 8 (notebooks/08_fast_sampling.ipynb)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minillada.estimate import paired_comparison
from minillada.evaluation.instructions import evaluate_instructions
from minillada.exercises import (
    Case,
    CheckResult,
    accuracy_and_passes,
    assert_same,
    check,
    run_experiment,
)
from minillada.models.attention import attention_readable
from minillada.sampling.primitives import NEG_INF, positions_to_reveal


def _window_reference(q, k_window, v_window, k_cache, v_cache, start):
    W = q.shape[2]
    k = torch.cat([k_cache[:, :, :start], k_window, k_cache[:, :, start + W :]], dim=2)
    v = torch.cat([v_cache[:, :, :start], v_window, v_cache[:, :, start + W :]], dim=2)
    return attention_readable(q, k, v)


def _window_cases() -> list[Case]:
    g = torch.Generator().manual_seed(8)
    cases = []
    for description, B, H, N, W, start in [
        ("a window in the middle of 20 positions (a dual cache)", 1, 2, 20, 4, 8),
        ("the window runs to the end (a prefix cache)", 2, 3, 16, 6, 10),
        ("the window is the first block, right after a 5-token prompt", 1, 2, 12, 4, 5),
        ("the window covers everything (a refresh): nothing comes from the cache", 1, 1, 6, 6, 0),
    ]:
        Dh = 8
        q = torch.randn(B, H, W, Dh, generator=g, dtype=torch.float64)
        k_win, v_win = (torch.randn(B, H, W, Dh, generator=g, dtype=torch.float64) for _ in "kv")
        k_cache, v_cache = (
            torch.randn(B, H, N, Dh, generator=g, dtype=torch.float64) for _ in "kv"
        )
        cases.append(Case(description, (q, k_win, v_win, k_cache, v_cache, start)))
    return cases


def check_window_attention(fn: Callable) -> CheckResult:
    """Exercise 8.1: fn(q, k_window, v_window, k_cache, v_cache, start) -> the window's attention
    output (B, H, W, Dh), its keys and values spliced into the cached ones at ``start``."""
    return check(
        "Exercise 8.1",
        fn,
        _window_reference,
        _window_cases(),
        "minillada.models.kv_cache.LayerCache.splice + attention",
        compare=lambda e, g: assert_same(e, g, atol=1e-10, rtol=1e-10),
    )


def _threshold_reference(confidence, threshold):
    return positions_to_reveal(confidence, None, threshold)


def _threshold_cases() -> list[Case]:
    def row(*values):
        return [NEG_INF if v is None else v for v in values]

    def scores(*rows):  # float64, as the sampler's confidences
        return torch.tensor(rows, dtype=torch.float64)

    return [
        Case("two tokens above 0.9", (scores(row(0.95, 0.2, 0.91, None)), 0.9)),
        Case("none above: the single best one still", (scores(row(0.3, 0.6, 0.1)), 0.9)),
        Case("exactly at the threshold counts", (scores(row(0.5, 0.7, 0.49)), 0.5)),
        Case(
            "two rows; the second has no candidate left",
            (scores(row(0.8, 0.99, 0.7), row(None, None, None)), 0.75),
        ),
        Case("threshold 1: one token per step", (scores(row(0.99, 0.999, 0.98)), 1.0)),
    ]


def check_reveal_by_threshold(fn: Callable) -> CheckResult:
    """Exercise 8.2: fn(confidence (B, L), threshold) -> (B, L) bool: every candidate (a score
    above -inf) reaching the threshold, and at least the best candidate of each row."""
    return check(
        "Exercise 8.2",
        fn,
        _threshold_reference,
        _threshold_cases(),
        "minillada.sampling.primitives.positions_to_reveal",
    )


THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)


def check_threshold_experiment(
    fn: Callable, model, tokenizer, items, sampler: str = "fixed", cache: str = "dual"
) -> CheckResult:
    """Exercise 8.3: fn(thresholds) -> {threshold: (accuracy, mean forward passes)} on ``items``
    with ``sampler`` and ``cache``, budget 32, blocks of 8. The checker repeats the measurement
    and prints, for each threshold, what the exact sampler and it get right on the same items and
    McNemar's exact test of the two; it draws no conclusion (that is the learner's)."""
    got = run_experiment("Exercise 8.3", fn, list(THRESHOLDS))
    if got is None:
        return CheckResult(False)

    def run(threshold, use_cache):
        return evaluate_instructions(
            model, tokenizer, items, sampler, 32, 8, False, threshold, use_cache
        )["all"]

    scores = {}
    for t in THRESHOLDS:
        scores[t] = s = run(t, cache)
        accuracy_and_passes(
            "Exercise 8.3", f"threshold {t}", got[t], s.correct, s.n, s.mean_forward_passes,
            f"Score the items you were given with evaluate_instructions, sampler {sampler!r}, "
            f"budget 32, blocks of 8, threshold={t}, cache={cache!r}, and read its 'all' score.",
        )  # fmt: skip
    exact = run(None, None)
    right = [a.correct for a in exact.answers]
    print(f"Exercise 8.3 passed: {len(THRESHOLDS)} thresholds measured on {exact.n} items; the "
          f"exact sampler gets {exact.correct} right in {exact.mean_forward_passes:.1f} passes "
          "per answer.")  # fmt: skip
    for t in THRESHOLDS:
        c = paired_comparison(right, [a.correct for a in scores[t].answers])
        print(f"  threshold {t}: {c.right_b} right in {scores[t].mean_forward_passes:4.1f} passes; "
              f"{c.only_b} right only here, {c.only_a} only under the exact sampler; McNemar "
              f"p = {c.p_two_sided:.2f}")  # fmt: skip
    return CheckResult(True)
