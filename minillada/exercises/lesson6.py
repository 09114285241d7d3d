"""Checkers for lesson 6 (notebooks/06_instruction_tuning.ipynb)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minillada.estimate import wilson_interval
from minillada.evaluation.instructions import evaluate_instructions
from minillada.exercises import (
    Case,
    CheckResult,
    ExerciseFailed,
    accuracy_and_passes,
    assert_same,
    check,
    run_experiment,
    seeded,
)
from minillada.models.llada import LLaDAModel, preset
from minillada.sampling.variable_length import var_generate
from minillada.training.sft import llada_sft_loss_from_noise, pack_examples

MASK, EOS = 511, 510  # the tiny stand-in's special ids


def _tiny_model(seed: int = 0, context: int = 128) -> LLaDAModel:
    cfg = preset(
        "tiny", max_sequence_length=context, mask_token_id=MASK, eos_token_id=EOS,
        pad_token_id=EOS,
    )  # fmt: skip
    return LLaDAModel(cfg, generator=seeded(seed)).double().eval()


def _sft_case(description: str, seed: int, prompt_lengths: list[int], L: int) -> Case:
    g = seeded(seed)
    B = len(prompt_lengths)
    ids = torch.randint(0, 500, (B, L), generator=g)
    t = torch.rand(B, generator=g, dtype=torch.float64)
    u = torch.rand(B, L, generator=g, dtype=torch.float64)
    return Case(description, (_tiny_model(seed), ids, torch.tensor(prompt_lengths), t, u, MASK))


def check_llada_sft_loss(fn: Callable) -> CheckResult:
    """Exercise 6.1: fn(model, ids, prompt_lengths, t, u, mask_id) -> LLaDA's SFT loss."""
    cases = [
        _sft_case("two rows, prompts of 3 and 5 tokens, length 12", 0, [3, 5], 12),
        _sft_case("four rows with very different answer lengths", 1, [1, 9, 4, 14], 16),
        _sft_case("a row whose answer is a single token", 2, [7, 2], 8),
    ]
    g = seeded(3)
    ids = torch.randint(0, 500, (2, 10), generator=g)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)  # p = eps and p = 1
    u = torch.rand(2, 10, generator=g, dtype=torch.float64)
    cases.append(
        Case("t = 0 (almost nothing masked) and t = 1 (the whole answer masked)",
             (_tiny_model(3), ids, torch.tensor([4, 6]), t, u, MASK))
    )  # fmt: skip
    return check(
        "Exercise 6.1",
        fn,
        llada_sft_loss_from_noise,
        cases,
        "minillada.training.sft.llada_sft_loss_from_noise",
        compare=_compare_loss,
    )


def _compare_loss(expected: torch.Tensor, got) -> None:
    if not torch.is_tensor(got) or got.numel() != 1:
        raise ExerciseFailed(f"expected one number (a 0-d tensor), got {got!r}")
    assert_same(expected.double(), got.double().reshape(()), atol=1e-9, rtol=1e-9)


def _pack_cases() -> list[Case]:
    g = seeded(4)

    def examples(n: int, longest: int):
        lengths = torch.randint(1, longest, (n, 2), generator=g).tolist()
        prompts = [torch.randint(0, 9, (p,), generator=g).tolist() for p, _ in lengths]
        answers = [torch.randint(0, 9, (a,), generator=g).tolist() for _, a in lengths]
        return prompts, answers

    p1, a1 = examples(5, 6)
    p2, a2 = examples(12, 9)
    return [
        Case("two examples that fill exactly one window", ([[1, 2], [3]], [[4], [5, 6]], 0, 7)),
        Case("five examples, windows of 4 (the tail is dropped)", (p1, a1, 0, 4)),
        Case("twelve examples, windows of 16, EOS id 99", (p2, a2, 99, 16)),
    ]


def check_pack_examples(fn: Callable) -> CheckResult:
    """Exercise 6.2: fn(prompts, answers, eos_id, window) -> packed windows (N, window)."""
    return check(
        "Exercise 6.2",
        fn,
        pack_examples,
        _pack_cases(),
        "minillada.training.sft.pack_examples",
    )


def _first_new_token(tokens: torch.Tensor, P: int, block: int, k: int) -> int:
    """A token of block k (0-based) of a generation that none of the earlier blocks holds."""
    earlier = set(tokens[P : P + k * block].tolist())
    for tok in tokens[P + k * block : P + (k + 1) * block].tolist():
        if tok not in earlier:
            return tok
    raise RuntimeError("no new token in that block; pick another seed")


def _var_cases() -> list[Case]:
    model = _tiny_model(5, context=64)
    prompt = torch.randint(0, 500, (1, 10), generator=seeded(6))
    # Which token would first appear in the 2nd block: with it as the stop id, the run must
    # stop after exactly two blocks.
    full = var_generate(model, prompt, 32, 8, 4, MASK, stop_ids=[-1]).tokens[0]
    stop = _first_new_token(full, 10, 8, 1)
    long_prompt = torch.randint(0, 500, (1, 43), generator=seeded(7))
    return [
        Case("no stop id ever appears: the whole budget of 4 blocks",
             (model, prompt, 32, 8, 4, MASK, [-1])),
        Case("the stop id first appears in the 2nd block: stop there",
             (model, prompt, 32, 8, 4, MASK, [stop])),
        Case("one token per step (steps = block_length = 4)",
             (model, prompt, 16, 4, 4, MASK, [-1])),
        Case("a 43-token prompt in a 64-token context: 21 positions are left, so the budget of "
             "48 is clipped to 16, the whole blocks that fit",
             (model, long_prompt, 48, 8, 2, MASK, [-1])),
    ]  # fmt: skip


def _var_reference(model, prompt, gen_length, block_length, steps, mask_id, stop_ids):
    r = var_generate(model, prompt, gen_length, block_length, steps, mask_id, stop_ids=stop_ids)
    return r.tokens, r.forward_passes


def check_var_generate(fn: Callable) -> CheckResult:
    """Exercise 6.3: fn(model, prompt, gen_length, block_length, steps, mask_id, stop_ids) ->
    (tokens (1, P + n), forward passes), as iLLaDA's variable-length generation at temperature 0."""
    return check(
        "Exercise 6.3",
        fn,
        _var_reference,
        _var_cases(),
        "minillada.sampling.variable_length.var_generate",
    )


BLOCK_LENGTHS = (4, 8, 16, 32)


def check_block_experiment(fn: Callable, model, tokenizer, items, budget: int) -> CheckResult:
    """Exercise 6.4: fn(block_lengths) -> {block_length: (accuracy, mean forward passes)} of
    variable-length generation on ``items``; then the outcome: the block length with the fewest
    passes whose accuracy is inside block ``budget``'s 95% interval."""
    blocks = [b for b in BLOCK_LENGTHS if b <= budget]
    got = run_experiment("Exercise 6.4", fn, blocks)
    if got is None:
        return CheckResult(False)
    expected = {}
    for b in blocks:
        s = evaluate_instructions(model, tokenizer, items, "variable", budget, b, progress=False)
        expected[b] = (s["all"].correct, s["all"].n, s["all"].mean_forward_passes)
    for b, (correct, n, passes) in expected.items():
        accuracy_and_passes(
            "Exercise 6.4", f"on case block_length={b}", got[b], correct, n, passes,
            "Use variable-length generation with the budget given, on all the items.",
        )  # fmt: skip
    lo, hi = wilson_interval(expected[budget][0], expected[budget][1])
    keep = [b for b in blocks if lo <= expected[b][0] / expected[b][1] <= hi]
    best = min(keep, key=lambda b: expected[b][2])
    print(
        f"Exercise 6.4 passed: {len(blocks)} block lengths measured on {len(items)} items.\n"
        + "\n".join(
            f"  block {b:2d}: accuracy {c / n:6.1%}, {p:5.1f} forward passes per answer"
            for b, (c, n, p) in expected.items()
        )
        + f"\n  Block {budget} (one canvas of the whole budget) has the interval "
        f"[{lo:.1%}, {hi:.1%}]; the fewest passes inside it: block {best} "
        f"({expected[budget][2] / expected[best][2]:.1f}x fewer passes than block {budget})."
    )
    return CheckResult(True)
