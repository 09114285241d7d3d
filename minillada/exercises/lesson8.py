"""Checkers for lesson 8 (notebooks/08_fast_sampling.ipynb)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minillada.estimate import paired_comparison
from minillada.evaluation.instructions import evaluate_instructions
from minillada.exercises import (
    Case,
    CheckResult,
    ExerciseFailed,
    accuracy_and_passes,
    check,
    run_experiment,
    short_repr,
)
from minillada.models.llada import LLaDAModel, preset
from minillada.sampling.generate import generate
from minillada.sampling.primitives import NEG_INF, positions_to_reveal

MASK, EOS = 511, 510  # the tiny model's special ids


def _tiny_model(seed: int) -> LLaDAModel:
    """A random 2-layer LLaDA in float64 whose weights are scaled up, so that its predictions are
    sharp and a stale cache, a wrong window or a missed refresh changes the tokens."""
    cfg = preset("tiny", mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS)
    model = LLaDAModel(cfg, generator=torch.Generator().manual_seed(seed)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


def _spy(model: LLaDAModel) -> list[tuple[str, int, int]]:
    """Record every forward pass of ``model`` as (kind, first position, end): kind "record" (a
    full forward that records the cache), "window" (positions first .. end against the cache) or
    "plain" (a full forward without a cache). Returns the list the passes are appended to."""
    passes: list[tuple[str, int, int]] = []
    forward = type(model).forward

    def spied(ids, attention_mask=None, cache=None, start=0, positions=None, logits_from=None):
        W = ids.shape[1]
        if cache is None:
            passes.append(("plain", 0, W))
        elif cache.recording:
            passes.append(("record", 0, W))
        else:
            passes.append(("window", start, start + W))
        return forward(model, ids, attention_mask, cache, start, positions, logits_from)

    model.forward = spied  # an instance attribute: nn.Module.__call__ finds it first
    return passes


def _describe(p: tuple[str, int, int]) -> str:
    kind, a, b = p
    if kind == "record":
        return f"a full forward over the {b} positions that records the cache"
    if kind == "window":
        return f"a window forward over positions {a}..{b - 1} against the cache"
    return f"a full forward over the {b} positions without the cache"


def _where(index: int, P: int, G: int, block: int, per_block: int) -> str:
    """Which block and step the ``index``-th forward pass of a fixed schedule belongs to."""
    b, step = divmod(index, per_block)
    if b >= G // block:
        return f"pass {index + 1} (after the last step)"
    return f"pass {index + 1} (block {b + 1}, step {step + 1} of {per_block})"


CACHED_CASES = [
    # description, model seed, prompt length, gen_length, block_length, steps, cache, refresh
    ("a dual cache, 3 blocks of 4, one token per step", 0, 5, 12, 4, 12, "dual", None),
    ("a prefix cache: the window runs from the block to the end", 1, 6, 12, 4, 12, "prefix", None),
    ("two tokens per step: 4 blocks of 4 in 8 steps", 2, 3, 16, 4, 8, "dual", None),
    ("a dual cache refreshed every 2 steps of a 6-step block", 3, 4, 12, 6, 12, "dual", 2),
    ("refreshed every 3 steps of a 4-step block: steps 1 and 4 record", 4, 5, 12, 4, 12, "dual", 3),
    ("a prefix cache refreshed every 2 steps", 5, 2, 8, 4, 8, "prefix", 2),
]


def check_cached_sampler(fn: Callable) -> CheckResult:
    """Exercise 8.1: fn(model, prompt (1, P), gen_length, block_length, steps, mask_id, cache,
    refresh) -> the canvas (1, P + gen_length) that ``generate(model, prompt, gen_length,
    block_length, steps, mask_id, cache=cache, cache_refresh=refresh)`` returns at temperature 0,
    with the same forward passes: a full forward that records the cache at a block's first step
    and every ``refresh`` steps, and a window forward at the other steps (the block for "dual",
    the block and all after it for "prefix")."""
    g = torch.Generator().manual_seed(8)
    for n, (description, seed, P, G, block, steps, cache, refresh) in enumerate(CACHED_CASES):
        label = f"Exercise 8.1: case {n + 1}/{len(CACHED_CASES)} ({description})"
        prompt = torch.randint(0, 500, (1, P), generator=g)
        learner_model, reference_model = _tiny_model(seed), _tiny_model(seed)
        got_passes, expected_passes = _spy(learner_model), _spy(reference_model)
        try:
            with torch.no_grad():
                got = fn(learner_model, prompt.clone(), G, block, steps, MASK, cache, refresh)
        except NotImplementedError:
            print("Exercise 8.1 not attempted yet; the lesson continues with "
                  "minillada.sampling.generate(..., cache=...).")  # fmt: skip
            return CheckResult(False)
        except Exception as err:
            raise ExerciseFailed(
                f"Exercise 8.1: your function raised {type(err).__name__}: {err}\n"
                f"  on case {n + 1}/{len(CACHED_CASES)}: {description}"
            ) from err
        expected = generate(
            reference_model, prompt, G, block, steps, MASK, cache=cache, cache_refresh=refresh
        )
        per_block = steps // (G // block)
        for i, (e, p) in enumerate(zip(expected_passes, got_passes, strict=False)):
            if e != p:
                raise ExerciseFailed(
                    f"{label}:\n  {_where(i, P, G, block, per_block)}: expected {_describe(e)}, "
                    f"your function ran {_describe(p)} (the canvas has {P} prompt positions, the "
                    f"blocks start at {list(range(P, P + G, block))}; in all, expected "
                    f"{len(expected_passes)} passes, yours ran {len(got_passes)})"
                )
        if len(got_passes) != len(expected_passes):
            raise ExerciseFailed(  # the same passes as far as they go, then too few or too many
                f"{label}:\n  expected {len(expected_passes)} forward passes ({per_block} per "
                f"block), your function ran {len(got_passes)}"
            )
        if not torch.is_tensor(got) or tuple(got.shape) != tuple(expected.shape):
            raise ExerciseFailed(
                f"{label}:\n  expected the canvas, a tensor of shape {tuple(expected.shape)}, "
                f"got {short_repr(got)}"
            )
        if not torch.equal(got.long(), expected):
            wrong = (got.long() != expected)[0].nonzero().squeeze(1).tolist()
            raise ExerciseFailed(
                f"{label}:\n  the forward passes are right but the tokens differ at positions "
                f"{wrong[:6]} (the first ones)\n  expected {expected[0, P:].tolist()}\n  got      "
                f"{got[0, P:].tolist()}\n  Rank the masked positions of the block by the "
                "probability of their proposed token, and reveal as many as the schedule says."
            )
    print(
        f"Exercise 8.1 passed: {len(CACHED_CASES)} cases agree token for token with "
        "minillada.sampling.generate(..., cache=..., cache_refresh=...), with the same full and "
        "window forward passes."
    )
    return CheckResult(True)


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
