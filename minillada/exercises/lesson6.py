"""Checkers for lesson 6 (notebooks/06_instruction_tuning.ipynb)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch

from minillada.estimate import paired_comparison
from minillada.evaluation.instructions import evaluate_instructions
from minillada.exercises import (
    Case,
    CheckResult,
    ExerciseFailed,
    accuracy_and_passes,
    check,
    forbidden,
    run_experiment,
    seeded,
    short_repr,
)
from minillada.models.llada import LLaDAModel, preset
from minillada.sampling.variable_length import var_generate
from minillada.training.loop import (
    TrainConfig,
    loss_step,
    make_optimizer,
    new_train_state,
    train_loop,
)
from minillada.training.sft import llada_sft_loss_from_noise, pack_examples, pad_sft_batch

MASK, EOS = 511, 510  # the tiny stand-in's special ids


def _tiny_model(seed: int = 0, context: int = 128) -> LLaDAModel:
    cfg = preset(
        "tiny", max_sequence_length=context, mask_token_id=MASK, eos_token_id=EOS,
        pad_token_id=EOS,
    )  # fmt: skip
    return LLaDAModel(cfg, generator=seeded(seed)).double().eval()


# --- Exercise 6.1: one step of LLaDA's supervised fine-tuning ----------------------------------

SFT_LR = 1e-2  # large enough that every update shows in the parameters


def _sft_config(steps: int) -> TrainConfig:
    """A constant learning rate and no clipping: the loop's iteration is then exactly
    zero the gradients, the loss, backward, AdamW."""
    return TrainConfig(max_iters=steps, lr=SFT_LR, min_lr=SFT_LR, warmup_iters=0, grad_clip=0.0)


def _sft_batch(g: torch.Generator, prompts: list[int], answers: list[int], t: list[float]):
    """LLaDA's SFT rows (prompt + answer, EOS padding to the longest row) from seeded ids, with
    the times t (B,) and the noise u (B, L)."""
    ids, prompt_lengths = pad_sft_batch(
        [torch.randint(0, 500, (p,), generator=g).tolist() for p in prompts],
        [torch.randint(0, 500, (a,), generator=g).tolist() for a in answers],
        EOS,
    )
    u = torch.rand(ids.shape, generator=g, dtype=torch.float64)
    return ids, prompt_lengths, torch.tensor(t, dtype=torch.float64), u


def _sft_cases() -> list[tuple[str, int, list[tuple]]]:
    """(description, model seed, batches): each case starts from a fresh model and optimizer and
    takes one step per batch. Each typical mistake first fails the case that names it."""
    g = seeded(8)
    return [
        ("the basics: one row with no prompt and no padding, t = 1 (every position masked), one "
         "step", 0, [_sft_batch(g, [0], [10], [1.0])]),
        ("a prompt of 5 tokens, t = 1: only the answer may be masked, and the row's sum is divided "
         "by its answer length (7), not by the row's length (12)", 1,
         [_sft_batch(g, [5], [7], [1.0])]),
        ("t = 0.3, part of the answer masked: each masked token's loss weighs 1/p(t), and the "
         "sum is divided by the answer length, not by the number of masked tokens", 2,
         [_sft_batch(g, [4], [9], [0.3])]),
        ("two rows with 4-token prompts and answers of 2 and 9 tokens: the shorter answer is "
         "padded with 7 EOS, which count as answer (masked, trained, and in its length)", 3,
         [_sft_batch(g, [4, 4], [2, 9], [0.8, 0.5])]),
        ("four rows, prompts of 1, 9, 3 and 6 tokens: each row is divided by its own answer "
         "length, then the rows are averaged", 4,
         [_sft_batch(g, [1, 9, 3, 6], [5, 2, 8, 1], [0.9, 0.2, 0.6, 0.45])]),
        ("three steps in a row on one model and optimizer, as a training loop calls them: each "
         "step starts from zero gradients", 5,
         [_sft_batch(g, [3, 5], [6, 2], [0.7, 0.4]), _sft_batch(g, [2, 6], [4, 4], [0.5, 0.9]),
          _sft_batch(g, [4, 1], [3, 7], [0.25, 0.6])]),
    ]  # fmt: skip


def _library_steps(model: LLaDAModel, batches: list[tuple]) -> Iterator[float]:
    """minillada's own fine-tuning: ``train_loop`` with ``loss_step`` and LLaDA's SFT loss, one
    iteration per batch. Yields each step's loss, the model updated in place."""
    cfg = _sft_config(len(batches))
    state = new_train_state(model, cfg)
    queue = iter(batches)

    def loss_fn(model, batch, generator):
        ids, prompt_lengths, t, u = batch
        return llada_sft_loss_from_noise(model, ids, prompt_lengths, t, u, MASK)

    step = loss_step(lambda generator: next(queue), loss_fn)
    for _ in batches:
        state = train_loop(model, step, cfg, state, stop_after=1, progress=False)
        yield state.history["loss"][-1]


def check_sft_step(fn: Callable) -> CheckResult:
    """Exercise 6.1: fn(model, optimizer, ids, prompt_lengths, t, u, mask_id) -> the loss, after
    one step of LLaDA's SFT: zero the gradients; mask the answer positions where u < p(t); the loss
    (CE / p(t) summed per row, divided by the row's answer length, averaged over rows); backward;
    ``optimizer.step()``. Compared, the loss and every parameter after every step, with
    ``minillada.training.loop.train_loop`` running ``llada_sft_loss_from_noise``."""
    exercise = "Exercise 6.1"
    cases = _sft_cases()
    for i, (description, seed, batches) in enumerate(cases):
        where = f"case {i + 1}/{len(cases)} ({description})"
        ours = _tiny_model(seed, context=32)
        theirs = copy.deepcopy(ours)
        optimizer = make_optimizer(theirs, _sft_config(len(batches)))
        for k, expected in enumerate(_library_steps(ours, batches)):
            at = f"{where}, step {k + 1} of {len(batches)}"
            ids, prompt_lengths, t, u = (x.clone() for x in batches[k])
            try:
                with forbidden(
                    llada_sft_loss_from_noise,
                    expected="your own loss",
                    hint="mask, run the model, weight and normalise it yourself",
                ):
                    got = fn(theirs, optimizer, ids, prompt_lengths, t, u, MASK)
            except NotImplementedError:
                print(f"{exercise} not attempted yet; the lesson continues with minillada's "
                      "training loop and minillada.training.sft.llada_sft_loss_fn.")  # fmt: skip
                return CheckResult(False)
            except Exception as err:
                raise ExerciseFailed(
                    f"{exercise}: your function raised {type(err).__name__}: {err}\n  on {at}"
                ) from err
            try:
                loss = float(got)
            except (TypeError, ValueError, RuntimeError):
                raise ExerciseFailed(
                    f"{exercise}: on {at}: expected the loss (a number or a 0-d tensor), got "
                    f"{short_repr(got)}"
                ) from None
            if not abs(loss - expected) <= 1e-9 * max(1.0, abs(expected)):
                raise ExerciseFailed(
                    f"{exercise}: on {at}: expected the loss {expected!r}, got {loss!r}"
                )
            for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
                if not torch.allclose(q.detach(), p.detach(), rtol=1e-7, atol=1e-10):
                    err = (q.detach() - p.detach()).abs().max().item()
                    raise ExerciseFailed(
                        f"{exercise}: on {at}: the loss agrees, but after the step the parameter "
                        f"{name} differs from minillada's (max abs error {err:.3g}): expected "
                        "the optimizer to update it from this step's gradients alone"
                    )
    steps = sum(len(batches) for _, _, batches in cases)
    print(f"{exercise} passed: {len(cases)} cases, {steps} steps; the loss and every parameter "
          "after each step agree with minillada's training loop.")  # fmt: skip
    return CheckResult(True)


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
    variable-length generation on ``items``. The checker repeats the measurement and prints, for
    each block length, the items it and block ``budget`` (one canvas of the whole budget) get
    right on the same items, with McNemar's exact test of the two; it draws no conclusion (that
    is the learner's)."""
    blocks = [b for b in BLOCK_LENGTHS if b <= budget]
    got = run_experiment("Exercise 6.4", fn, blocks)
    if got is None:
        return CheckResult(False)
    scores = {}
    for b in blocks:
        scores[b] = s = evaluate_instructions(
            model, tokenizer, items, "variable", budget, b, progress=False
        )["all"]
        accuracy_and_passes(
            "Exercise 6.4", f"on case block_length={b}", got[b], s.correct, s.n,
            s.mean_forward_passes,
            "Use variable-length generation with the budget given, on all the items.",
        )  # fmt: skip
    whole = [a.correct for a in scores[budget].answers]
    print(f"Exercise 6.4 passed: {len(blocks)} block lengths measured on {len(items)} items; "
          f"block {budget}, one canvas of the whole budget, gets {scores[budget].correct} right in "
          f"{scores[budget].mean_forward_passes:.1f} passes per answer.")  # fmt: skip
    for b in blocks:
        s = scores[b]
        lo, hi = s.interval
        line = (
            f"  block {b:2d}: {s.correct:3d} right ({s.accuracy:5.1%} [{lo:5.1%}, {hi:5.1%}]) in "
            f"{s.mean_forward_passes:4.1f} passes"
        )
        if b != budget:
            c = paired_comparison(whole, [a.correct for a in s.answers])
            line += (
                f"; {c.only_b} right only here, {c.only_a} only with block {budget}; McNemar "
                f"p = {c.p_two_sided:.2g}"
            )
        print(line)
    return CheckResult(True)
