"""Checkers for lesson 7 (notebooks/07_released_weights.ipynb)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minillada.diffusion.confidence import confidence_score
from minillada.evaluation.gsm8k import extract_answer
from minillada.evaluation.parallel import merge_shards
from minillada.exercises import (
    Case,
    CheckResult,
    ExerciseFailed,
    assert_same,
    check,
    run_experiment,
)
from minillada.models.llada import LLaDAModel, preset
from minillada.sampling.answer import GenerationSettings, generate_answer

MASK, EOS = 511, 510  # the tiny model's special ids


def _answer_cases() -> list[Case]:
    texts = {
        "a plain solution": "She sold 48 + 24 = 72 clips.\n#### 72",
        "a number tried while thinking, then the answer": (
            "<think>Maybe #### 70? No: 48 + 24 = 72.</think>The total is 72.\n#### 72"
        ),
        "two '####' lines after the thinking: the last one counts": (
            "</think>#### 10\nWait, I forgot the tax.\n#### 12"
        ),
        "commas, a dollar sign and a final full stop": "</think>It costs\n#### $1,250.",
        "a negative answer": "</think>The change is\n#### -3",
        "a zero fraction": "</think>#### 18.00",
        "no '####' at all": "</think>The answer is 18.",
        "a '####' only inside the thinking": "<think>#### 5</think>I am not sure.",
        "several </think>: only the text after the last counts": (
            "</think>#### 4</think>#### 9 and more"
        ),
        "no </think>: the whole text counts": "Step 1: 3 * 4 = 12.\n#### 12",
        "'####' followed by no number": "</think>####\n",
        "'####' then a line break: spaces may follow it, a new line may not": "</think>####\n72",
    }
    return [Case(description, (text,)) for description, text in texts.items()]


def check_extract_answer(fn: Callable) -> CheckResult:
    """Exercise 7.2: fn(text) -> the graded GSM8K answer (normalised number string) or None."""
    return check(
        "Exercise 7.2",
        fn,
        extract_answer,
        _answer_cases(),
        "minillada.evaluation.gsm8k.extract_answer",
    )


def _tiny_model(seed: int) -> LLaDAModel:
    cfg = preset("tiny", mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS)
    model = LLaDAModel(cfg, generator=torch.Generator().manual_seed(seed)).double().eval()
    with torch.no_grad():  # sharper predictions than the initial ones, so the order matters
        for p in model.parameters():
            p.mul_(4.0)
    return model


def _score_reference(model, context_ids, answer_ids, mask_id, eos_id):
    return confidence_score(model, context_ids, answer_ids, mask_id, eos_id).score


def _score_cases() -> list[Case]:
    g = torch.Generator().manual_seed(7)
    cases = []
    for description, seed, P, L, eos in [
        ("a 6-token context and a 4-token answer", 0, 6, 4, None),
        ("the same with padd_eos (one EOS appended to every forward pass)", 0, 6, 4, EOS),
        ("a one-token answer: one forward pass", 1, 9, 1, None),
        ("a long answer after a short context, with padd_eos", 2, 2, 9, EOS),
    ]:
        context = torch.randint(0, 500, (P,), generator=g)
        answer = torch.randint(0, 500, (L,), generator=g)
        cases.append(Case(description, (_tiny_model(seed), context, answer, MASK, eos)))
    return cases


def _compare_score(expected: float, got) -> None:
    """The lesson does not ask for float64, so a score computed in float32 is right too: each
    cross-entropy then carries about 1e-7 of its value (float32 keeps 24 bits), and the sum of at
    most 9 of them, each under 20 nats, about 2e-5 at worst. Every mistake the tests make (another
    order, no padd_eos, a wrong sum) moves the score by 0.1 nats or more."""
    if torch.is_tensor(got):
        if got.numel() != 1:
            raise ExerciseFailed(f"expected one number, got a tensor of shape {tuple(got.shape)}")
        got = float(got)
    assert_same(float(expected), got, atol=1e-4, rtol=1e-6)


def check_confidence_score(fn: Callable) -> CheckResult:
    """Exercise 7.3: fn(model, context_ids, answer_ids, mask_id, eos_id) -> iLLaDA's confidence
    score (a float: minus the sum of the chosen cross-entropies)."""
    return check(
        "Exercise 7.3",
        fn,
        _score_reference,
        _score_cases(),
        "minillada.diffusion.confidence.confidence_score",
        compare=_compare_score,
    )


def _merge_cases() -> list[Case]:
    return [
        Case("one rank holding everything, in order", ([[(0, "a"), (1, "b"), (2, "c")]], 3)),
        Case(
            "two ranks, strided shares",
            ([[(0, 0.5), (2, 2.5), (4, 4.5)], [(1, 1.5), (3, 3.5)]], 5),
        ),
        Case(
            "three ranks whose pairs arrive out of order",
            ([[(6, "g"), (0, "a"), (3, "d")], [(4, "e"), (1, "b")], [(5, "f"), (2, "c")]], 7),
        ),
        Case("more ranks than items: one rank has nothing", ([[(0, "x")], []], 1)),
    ]


_BAD_MERGES = [
    ("a rank skipped item 3", ([[(0, "a"), (2, "c")], [(1, "b")]], 4)),
    ("item 1 came from two ranks", ([[(0, "a"), (1, "b")], [(1, "b"), (2, "c")]], 3)),
    ("an index beyond the items (sharded with another world?)", ([[(0, "a"), (5, "f")]], 2)),
]


def check_merge_shards(fn: Callable) -> CheckResult:
    """Exercise 7.4: fn(per_rank, total) -> the results in item order; an error (any exception)
    for a missing, duplicated or out-of-range index."""
    passed = check(
        "Exercise 7.4",
        fn,
        merge_shards,
        _merge_cases(),
        "minillada.evaluation.parallel.merge_shards",
    )
    if not passed:
        return passed
    for description, args in _BAD_MERGES:
        try:
            got = fn(*args)
        except Exception:  # any clear refusal will do; the library raises RuntimeError
            continue
        raise ExerciseFailed(
            f"Exercise 7.4: {description}: expected an error, but your function returned {got!r}. "
            "A short or doubled result must never pass silently: a benchmark score computed from "
            "it would be wrong without anyone noticing."
        )
    print(
        f"  ... and it refuses all {len(_BAD_MERGES)} broken gathers (missing, doubled, outside)."
    )
    return passed


POWERS = (1, 2, 3)


def first_think_end(loaded, prompt_ids, power: float, budget: int = 128) -> int | None:
    """Where ``</think>`` first appears in the answer (0-based) with the end-of-thinking boost
    100 at ``power``, blocks of 32, 32 steps per block, the budget ``budget``; None if never."""
    settings = GenerationSettings(
        budget, 32, 32, variable_length=True, think_end_boost=100.0, think_end_power=power
    )
    answer = generate_answer(loaded.model, loaded.tokenizer, prompt_ids, settings)
    return first_occurrence(answer.generated.tolist(), loaded.tokenizer.think_end_ids)


def first_occurrence(ids: list[int], sequence: list[int]) -> int | None:
    """Where ``sequence`` (``</think>``: one id or several) first starts in ``ids``; None if not."""
    k = len(sequence)
    return next((i for i in range(len(ids) - k + 1) if ids[i : i + k] == sequence), None)


def check_think_end_experiment(
    fn: Callable, loaded, prompts: list, budget: int = 128
) -> CheckResult:
    """Exercise 7.1: fn(powers) -> {power: [position of the first </think> in the answer to each
    prompt, or None]} for the boost 100 at each power; then the outcome: how the power moves the
    end of thinking, on average over the prompts."""
    got = run_experiment("Exercise 7.1", fn, list(POWERS))
    if got is None:
        return CheckResult(False)
    for p in POWERS:
        expected = [first_think_end(loaded, prompt, p, budget) for prompt in prompts]
        if list(got[p]) != expected:
            raise ExerciseFailed(
                f"Exercise 7.1: power {p}: expected </think> first at positions {expected} (one "
                f"per prompt), got {got[p]!r}. Generate with GenerationSettings({budget}, 32, 32, "
                f"variable_length=True, think_end_boost=100.0, think_end_power={p}) and look for "
                "where the </think> ids (tokenizer.think_end_ids) first start in answer.generated."
            )
    # an answer that never closes its thinking counts as the whole budget
    means = {p: sum(budget if x is None else x for x in got[p]) / len(prompts) for p in POWERS}
    where = ", ".join(f"{means[p]:.1f} (power {p})" for p in POWERS)
    ordered = [means[p] for p in POWERS]
    verdict = (
        "the higher the power, the later the boost wins: a gentle push early, a hard one late"
        if ordered == sorted(ordered) and ordered[-1] > ordered[0]
        else "no simple order here: the boost competes with what the model itself prefers"
    )
    print(
        f"Exercise 7.1 passed: </think> first at position {where} on average over "
        f"{len(prompts)} prompts (budget {budget}); {verdict}."
    )
    return CheckResult(True)
