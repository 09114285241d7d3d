"""Checkers for lesson 3 (notebooks/03_likelihood_and_autoregression.ipynb).

3.1 the weight the t- and l-estimators give one mask pattern (reasoning: they are equal), 3.2 the
l-estimator's samples for one prompt and answer (section 1), 3.3 the spread of the t- and
l-estimators at 8 samples (an experiment), 3.4 multiple choice by likelihood (section 2),
3.5 the exact log-likelihood of a causal model (section 3), 3.6 the reversal questions asked by
hand (section 4).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from minillada.data.reversal import ReversalTask, make_reversal_task, questions
from minillada.diffusion.likelihood import conditional_nelbo_samples
from minillada.evaluation.autoregressive import token_log_probs
from minillada.evaluation.multiple_choice import choose, mdm_scorer
from minillada.evaluation.reversal import ask_mdm, twin_config
from minillada.exercises import (
    Case,
    CheckResult,
    ExerciseFailed,
    assert_same,
    check,
    run_experiment,
    seeded,
    short_repr,
)
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig


def _sharpened(model: TinyTransformer, factor: float) -> TinyTransformer:
    for p in model.parameters():  # larger weights, so the predictions are far from uniform
        p.data.mul_(factor)
    return model.eval()


# --- Exercise 3.1: the weight of one mask pattern -------------------------------------------------


def exact_pattern_weight(L: int, ell: int, method: str) -> float:
    """The total weight one fixed set of ``ell`` masked positions out of ``L`` receives from one
    sample of either estimator: probability (density, for t) times weight, summed over the
    estimator's randomness. For both it is 1 / (l C(L, l)) (lesson 3, section 1)."""
    if method not in ("t", "l"):
        raise ValueError(f"method must be 't' or 'l', got {method!r}")
    return 1.0 / (ell * math.comb(L, ell))


def check_pattern_weight(fn: Callable) -> CheckResult:
    """Exercise 3.1: fn(L, l, method) -> the weight one fixed pattern of l masked positions out of
    L gets from one sample of the t-estimator ("t") or the l-estimator ("l"); both equal
    1 / (l C(L, l)). Compared to a relative 1e-6, which a numerical integral over t meets."""
    cases = [
        Case("l-estimator, L = 4, one masked position", (4, 1, "l")),
        Case(
            "t-estimator, L = 4, one masked position (the 1/t weight at its largest)", (4, 1, "t")
        ),
        Case("l-estimator, L = 4, two masked positions: one of C(4, 2) = 6 patterns", (4, 2, "l")),
        Case("t-estimator, L = 4, two masked positions", (4, 2, "t")),
        Case("l-estimator, L = 24, 3 masked", (24, 3, "l")),
        Case("t-estimator, L = 24, 3 masked", (24, 3, "t")),
        Case("t-estimator, L = 24, every position masked", (24, 24, "t")),
        Case("l-estimator, L = 24, every position masked", (24, 24, "l")),
        Case("t-estimator, L = 128, 64 masked: one of about 2.4e37 patterns", (128, 64, "t")),
        Case("l-estimator, L = 128, 64 masked", (128, 64, "l")),
    ]

    def learner(L, ell, method):
        got = fn(L, ell, method)
        return float(got) if torch.is_tensor(got) and got.numel() == 1 else got

    return check(
        "Exercise 3.1",
        learner,
        exact_pattern_weight,
        cases,
        "the exact weights (the lesson derives them next)",
        compare=lambda e, got: assert_same(e, got, atol=0.0, rtol=1e-6),
    )


# --- Exercise 3.2: the l-estimator's samples ------------------------------------------------------


def _close(expected, got):
    assert_same(expected, got, atol=1e-4, rtol=1e-4)


def _reference_l_samples(model, prompt, answer, mask_id, mc_num, seed):
    return conditional_nelbo_samples(
        model, prompt, answer, mask_id, mc_num=mc_num, batch_size=mc_num, generator=seeded(seed)
    )


def check_l_estimator_samples(
    fn: Callable, model=None, prompt=None, answer=None, mask_id: int | None = None
) -> CheckResult:
    """Exercise 3.2: fn(model, prompt (P,), answer (L,), mask_id, mc_num, generator) -> (mc_num,)
    float64 l-estimator samples of -log p(answer | prompt), drawn as the library draws them
    (stratified_mask_counts, then mask_exactly, from ``generator``); against
    ``conditional_nelbo_samples`` with one mini-batch and a generator seeded the same. With
    ``model``, ``prompt``, ``answer`` and ``mask_id`` (the lesson's) a fifth case runs on them."""
    g = seeded(4)
    mask = 8

    def ids(n):
        return torch.randint(0, 8, (n,), generator=g)

    tiny = _tiny_bidirectional(0)
    cases = [
        Case(
            "a 5-token prompt and a 6-token answer, 8 samples", (tiny, ids(5), ids(6), mask, 8, 0)
        ),
        Case(
            "no prompt: the whole sequence is the answer (7 tokens, 7 samples)",
            (tiny, ids(0), ids(7), mask, 7, 1),
        ),
        Case(
            "a one-token answer: l = 1 and the weight L / l = 1 in every row",
            (tiny, ids(9), ids(1), mask, 4, 2),
        ),
        Case(
            "12 samples of a 4-token answer: the stratified counts wrap around",
            (_tiny_bidirectional(1), ids(3), ids(4), mask, 12, 3),
        ),
    ]
    if model is not None:
        cases.append(
            Case(
                f"the lesson's model, a {len(prompt)}-character prompt and a {len(answer)}-"
                "character answer, 16 samples",
                (model, torch.as_tensor(prompt), torch.as_tensor(answer), mask_id, 16, 0),
            )
        )

    def learner(model, prompt, answer, mask_id, mc_num, seed):
        with torch.no_grad():
            got = fn(model, prompt, answer, mask_id, mc_num, seeded(seed))
        return got.detach().cpu().double() if torch.is_tensor(got) else got

    return check(
        "Exercise 3.2",
        learner,
        _reference_l_samples,
        cases,
        "minillada.diffusion.likelihood.conditional_nelbo_samples",
        compare=_close,
    )


# --- Exercise 3.3: the estimators' spread at 8 samples (an experiment) ---------------------------

METHODS = ("t", "l")
SPREAD_SAMPLES = 8  # Monte Carlo samples per estimate


_SPREAD_CACHE: dict = {}


def spread_estimates(
    model, windows: torch.Tensor, mask_id: int, method: str, repeats: int
) -> torch.Tensor:
    """Exercise 3.3's estimates, (windows, repeats) float64: for every window (no prompt, the
    window is the answer) and repeat r, the mean of the SPREAD_SAMPLES samples of
    ``conditional_nelbo_samples`` (one mini-batch, ``method``, generator seeded r), in nats per
    token. Kept for the session, so the lesson's discussion reuses the checker's run."""
    key = (id(model), mask_id, method, repeats, tuple(windows.reshape(-1).tolist()), windows.shape)
    if key not in _SPREAD_CACHE:
        empty = torch.empty(0, dtype=torch.long)
        estimates = torch.zeros(len(windows), repeats, dtype=torch.float64)
        for i, w in enumerate(windows):
            for r in range(repeats):
                samples = conditional_nelbo_samples(
                    model, empty, w, mask_id, SPREAD_SAMPLES, SPREAD_SAMPLES, method=method,
                    generator=seeded(r),
                )  # (SPREAD_SAMPLES,), one mini-batch  # fmt: skip
                estimates[i, r] = samples.mean() / len(w)
        _SPREAD_CACHE[key] = estimates
    return _SPREAD_CACHE[key].clone()


def estimator_spread(
    model, windows: torch.Tensor, mask_id: int, method: str, repeats: int
) -> float:
    """Exercise 3.3's measurement: the standard deviation of ``spread_estimates`` over the
    repeats (ddof 1), root-mean-squared over the windows."""
    estimates = spread_estimates(model, windows, mask_id, method, repeats)
    return estimates.std(dim=1).pow(2).mean().sqrt().item()


def check_estimator_spread(
    fn: Callable, model, windows: torch.Tensor, mask_id: int, repeats: int
) -> CheckResult:
    """Exercise 3.3: fn(methods) -> {"t": spread, "l": spread}, each measured as
    ``estimator_spread`` does. Verifies the measurement and prints it; what it shows is the
    lesson's to discuss."""
    got = run_experiment("Exercise 3.3", fn, list(METHODS))
    if got is None:
        return CheckResult(False)
    W = len(windows)
    expected = {m: estimator_spread(model, windows, mask_id, m, repeats) for m in METHODS}
    for m in METHODS:
        try:
            value = float(got[m])
        except (TypeError, ValueError):
            raise ExerciseFailed(
                f"Exercise 3.3: {m!r}: expected one number (the spread), got {short_repr(got[m])}"
            ) from None
        # Both sides average the same float64 samples from the same library call on the same
        # shapes; only the order of the final reductions may differ (relative error ~1e-15), or
        # the estimates were held in float32 (an error of ~2e-7 on values near 2 nats/token,
        # ~2e-6 relative on a spread near 0.1). 1e-4 allows both; another seed, sample count,
        # unit or kind of average moves the spread by far more.
        if not math.isclose(value, expected[m], rel_tol=1e-4):
            raise ExerciseFailed(
                f"Exercise 3.3: the {m}-estimator's spread: expected {expected[m]:.6f} nats/token "
                f"({W} windows x {repeats} repeats), got {value:.6f}. For each window and repeat "
                f"r take one estimate: the mean of {SPREAD_SAMPLES} samples from one "
                f"conditional_nelbo_samples call (method={m!r}, a generator seeded r), divided "
                "by the window's length. Then take the standard deviation over the repeats "
                "(torch's default) and the root mean square of those over the windows."
            )
    print(
        f"Exercise 3.3 passed: your spreads agree with the library's ({W} windows x {repeats} "
        f"estimates of {SPREAD_SAMPLES} samples each): t-estimator {expected['t']:.3f}, "
        f"l-estimator {expected['l']:.3f} nats/token."
    )
    return CheckResult(True)


# --- Exercise 3.4: multiple choice by likelihood --------------------------------------------------


def _tiny_bidirectional(seed: int) -> TinyTransformer:
    cfg = TinyTransformerConfig(vocab_size=9, block_size=16, n_layer=2, n_head=2, n_embd=16)
    return _sharpened(TinyTransformer(cfg, generator=seeded(seed)), 3.0)


def _reference_choice(model, mask_id, context, options, mc_num, seed):
    scorer = mdm_scorer(model, mask_id, mc_num=mc_num, batch_size=mc_num, seed=seed)
    result = choose(scorer, context, options)
    return result.loglik, result.raw_choice, result.normalised_choice


def _compare_choice(expected, got) -> None:
    loglik, raw, norm = expected
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        raise ExerciseFailed(
            f"expected (log-likelihoods, raw choice, normalised choice), got {short_repr(got)}"
        )
    scores = got[0].tolist() if torch.is_tensor(got[0]) else got[0]
    try:
        scores = [float(s) for s in scores]
    except (TypeError, ValueError):
        raise ExerciseFailed(
            f"expected one log-likelihood per option, got {short_repr(got[0])}"
        ) from None

    # 1e-4 nats: the same library call on both sides agrees to ~1e-12; a hand-built estimator with
    # float32 cross-entropies drifts by at most ~1e-5 on these answers of up to 32 tokens
    def agree(a, b):
        return len(a) == len(b) and all(
            math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-4) for x, y in zip(a, b, strict=True)
        )

    if not agree(scores, loglik):
        if agree(scores, [-e for e in loglik]):
            hint = "These are the bounds on -log p: return the log-likelihoods, their negatives."
        else:
            hint = (
                "Score every option with the lesson's l-estimator (all its samples in one "
                "mini-batch) and the same seed for every option: common random numbers."
            )
        raise ExerciseFailed(
            f"log-likelihoods: expected {[round(e, 4) for e in loglik]}, got "
            f"{[round(s, 4) for s in scores]}. {hint}"
        )
    if int(got[1]) != raw:
        raise ExerciseFailed(
            f"raw choice: expected option {raw} (0-based), got {got[1]!r}: the raw choice is the "
            "option whose log-likelihood is highest (closest to 0)."
        )
    if int(got[2]) != norm:
        raise ExerciseFailed(
            f"normalised choice: expected option {norm} (0-based), got {got[2]!r}: divide each "
            "option's log-likelihood by that option's own length in tokens before comparing."
        )


def _choice_cases() -> list[Case]:
    g = seeded(5)
    mask = 8

    def ids(n):
        return torch.randint(0, 8, (n,), generator=g)

    return [
        Case(
            "4 options of 3 tokens after a 5-token context, 8 samples",
            (_tiny_bidirectional(0), mask, ids(5), tuple(ids(3) for _ in range(4)), 8, 0),
        ),
        Case(
            "options of 2, 7, 4 and 7 tokens: the raw and normalised choices differ",
            (_tiny_bidirectional(1), mask, ids(4), tuple(ids(n) for n in (2, 7, 4, 7)), 16, 3),
        ),
        Case(
            "a one-token option (scored exactly) among longer ones",
            (_tiny_bidirectional(2), mask, ids(6), tuple(ids(n) for n in (1, 3, 5)), 8, 1),
        ),
    ]


def check_choose_by_likelihood(
    fn: Callable, model=None, mask_id: int | None = None, items: Sequence = ()
) -> CheckResult:
    """Exercise 3.4: fn(model, mask_id, context, options, mc_num, seed) -> (list of estimated
    log p(option | context), the raw choice, the length-normalised choice), option indices
    0-based; against ``choose(mdm_scorer(...))``. ``items``: extra (context, options) token ids
    scored with ``model`` and 16 samples (the lesson passes two of its items)."""
    cases = _choice_cases()
    for i, (context, options) in enumerate(items):
        context, options = torch.as_tensor(context), tuple(torch.as_tensor(o) for o in options)
        description = f"the lesson's item {i}: {len(options)} options of {len(options[0])} tokens"
        cases.append(Case(description, (model, mask_id, context, options, 16, 0)))

    def learner(model, mask_id, context, options, mc_num, seed):  # options: a list of copies
        return fn(model, mask_id, context, [o.clone() for o in options], mc_num, seed)

    return check(
        "Exercise 3.4",
        learner,
        _reference_choice,
        cases,
        "minillada.evaluation.multiple_choice.choose with mdm_scorer",
        compare=_compare_choice,
    )


# --- Exercise 3.5: sequence_log_prob --------------------------------------------------------------


def _tiny_causal(seed: int) -> TinyTransformer:
    cfg = TinyTransformerConfig(
        vocab_size=7, block_size=12, n_layer=2, n_head=2, n_embd=16, causal=True
    )
    return _sharpened(TinyTransformer(cfg, generator=seeded(seed)), 10.0)


def _reference_sequence_log_prob(model, x, bos_id):
    return token_log_probs(model, x, bos_id).sum(dim=1)


def check_sequence_log_prob(fn: Callable) -> CheckResult:
    """Exercise 3.5: fn(model, x, bos_id) -> (N,) exact log p(x) under a causal model, nats."""
    g = seeded(3)
    model = _tiny_causal(0)
    cases = [
        Case("3 sequences of 12 tokens", (model, torch.randint(0, 6, (3, 12), generator=g), 6)),
        Case("one token: log p(x_1 | BOS)", (model, torch.tensor([[2]]), 6)),
        Case("5 sequences of 4 tokens", (model, torch.randint(0, 6, (5, 4), generator=g), 6)),
    ]
    return check(
        "Exercise 3.5",
        lambda *a: fn(*a).double(),
        _reference_sequence_log_prob,
        cases,
        "minillada.evaluation.autoregressive.token_log_probs(...).sum(dim=1)",
        compare=lambda e, got: _close(e, got),
    )


# --- Exercise 3.6: the reversal questions, asked by hand ------------------------------------------


@torch.no_grad()
def _reference_answers(model, task: ReversalTask, people: list[int], template: str):
    q, pos = questions(task, people, template)
    logits = model(q)[:, pos]  # (n, V)
    logits[:, task.mask_id] = float("-inf")
    return logits.argmax(dim=-1), ask_mdm(model, task, people, template).correct


def _compare_answers(expected, got) -> None:
    answers, correct = expected
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ExerciseFailed(f"expected (answers, number correct), got {short_repr(got)}")
    try:
        assert_same(answers, torch.as_tensor(got[0]).long(), path="answers")
    except ExerciseFailed as err:
        raise ExerciseFailed(
            f"{err}\nAsk each question with only its answer position masked (forward "
            "'KQZ > _', infill '_ > 482', backward '482 < _'), take the most likely token at "
            "that position, and never answer with the mask token itself."
        ) from None
    if int(got[1]) != correct:
        raise ExerciseFailed(
            f"number correct: expected {correct}, got {got[1]!r}: the right answer is the "
            "number for a forward question and the name for the other two."
        )


def _tiny_reversal() -> tuple[TinyTransformer, ReversalTask]:
    # an untrained twin on 6 people: without the ban it answers some questions with the mask itself
    task = make_reversal_task(num_people=6, seed=1)
    model = TinyTransformer(twin_config(task, False, 1, 16), generator=seeded(6))
    return _sharpened(model, 3.0), task


def check_answer_questions(
    fn: Callable, model=None, task: ReversalTask | None = None, people: Sequence[int] = ()
) -> CheckResult:
    """Exercise 3.6: fn(model, task, people, template) -> (the diffusion model's answer token for
    each person (n,), how many are right); against ``ask_mdm``. With ``model``, ``task`` and
    ``people`` (the lesson's trained twin) it is also asked every template on those people."""
    tiny, tiny_task = _tiny_reversal()
    templates = ("forward", "infill", "backward")
    cases = [
        Case(f"an untrained model on 6 people, {t}", (tiny, tiny_task, list(range(6)), t))
        for t in templates
    ]
    if model is not None:
        cases += [
            Case(f"the lesson's diffusion twin on {len(people)} people, {t}", (model, task, p, t))
            for p in [list(people)]
            for t in templates
        ]
    return check(
        "Exercise 3.6",
        fn,
        _reference_answers,
        cases,
        "minillada.evaluation.reversal.ask_mdm",
        compare=_compare_answers,
    )
