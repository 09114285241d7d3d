"""Checkers for lesson 2 (notebooks/02_sampling.ipynb).

2.1 the transfer schedule for a batch, 2.2 the whole block loop of the low-confidence sampler,
2.3 the largest Gumbel noise a uniform of a given dtype can give (reasoning: why float32 caps the
tail), 2.4 the block length at few steps (an experiment).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from minillada.evaluation.char_quality import char_quality
from minillada.exercises import (
    Case,
    CheckResult,
    ExerciseFailed,
    assert_same,
    check,
    run_experiment,
    short_repr,
)
from minillada.runtime import model_device
from minillada.sampling.generate import generate
from minillada.sampling.primitives import num_transfer_tokens
from minillada.sampling.traces import Trace


def check_transfer_schedule(fn: Callable) -> CheckResult:
    """Exercise 2.1: fn(num_masked (B,), steps) -> (B, steps) tokens to reveal per step, as even as
    possible with the remainder on the first steps."""
    cases = [
        Case("10 masks over 4 steps -> 3, 3, 2, 2", (torch.tensor([10]), 4)),
        Case("three rows with 7, 8 and 9 masks over 3 steps", (torch.tensor([7, 8, 9]), 3)),
        Case("as many steps as masks: one per step", (torch.tensor([5]), 5)),
        Case("one step reveals everything", (torch.tensor([128, 64]), 1)),
        Case("32 masks over 5 steps (remainder 2)", (torch.tensor([32]), 5)),
    ]
    return check(
        "Exercise 2.1",
        fn,
        num_transfer_tokens,
        cases,
        "minillada.sampling.primitives.num_transfer_tokens",
    )


# --- Exercise 2.2: the whole block loop of the low-confidence sampler ----------------------------

# (what the case tests, prompts, gen_length, block_length, steps); the prompts of a case have one
# length. Blocks of 4 revealed in one step each catch a loop that reveals right of its block; 10
# masks over 3 steps (4, 3, 3) one that schedules the whole canvas at once (30 over 9: 4, 4, 4, ..);
# blocks that start at a position no multiple of the block length (a prompt of 7 or 15) catch
# block bounds counted from the start of the canvas or off by one; no prompt at all catches a loop
# that assumes one.
BLOCK_LOOP_CASES = [
    ("one block of 32 (pure diffusion), 8 steps", ["ROMEO:\n"], 32, 32, 8),
    ("3 blocks of 10 in 9 steps: 4, 3, 3 tokens per step in each block", ["ROMEO:\n"], 30, 10, 9),
    ("8 blocks of 4, one step each", ["ROMEO:\n"], 32, 4, 8),
    ("3 blocks of 8, one token per step", ["First Citizen:\n"], 24, 8, 24),
    ("a batch of two prompts, 5 blocks of 8 in 15 steps", ["ROMEO:\n", "JULIET:"], 40, 8, 15),
    ("no prompt: 4 blocks of 6 in 8 steps", [""], 24, 6, 8),
]


class _RecordingModel:
    """Stands for the lesson's model: answers every call with the model's logits and keeps a copy
    of the canvas each call was given, so the checker can follow the learner's loop step by step."""

    def __init__(self, model: Callable):
        self.model = model
        self.canvases: list[torch.Tensor] = []

    def __call__(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        self.canvases.append(torch.as_tensor(ids).detach().cpu().clone())
        return self.model(ids, attention_mask)

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def _generated(positions: torch.Tensor, P: int) -> list[int]:
    return [int(i) - P for i in positions]


def _step_difference(
    before: torch.Tensor,
    got: torch.Tensor,
    expected: torch.Tensor,
    trace: Trace,
    step: int,
    block_length: int,
) -> str:
    """Why the canvas ``got`` after step ``step`` (0-based) differs from generate's ``expected``,
    both (B, L) and both made from ``before``."""
    P, M = trace.prompt_length, trace.mask_id
    block = trace.blocks[step]
    block_steps = [s for s, b in enumerate(trace.blocks) if b == block]
    lo, hi = P + block * block_length, P + (block + 1) * block_length
    where = (
        f"step {block_steps.index(step) + 1} of block {block + 1} (generated positions {lo - P}.."
        f"{hi - P - 1})"
    )
    for r in range(before.shape[0]):
        changed = (before[r] != M) & (got[r] != before[r])
        if changed[:P].any():
            return (
                f"{where} changed prompt position(s) {changed[:P].nonzero()[:, 0].tolist()} of "
                f"row {r}; expected the prompt (positions 0..{P - 1} of the canvas) to stay as "
                "given: it is the condition, never a candidate. Generated position 0 is canvas "
                f"position {P}."
            )
        if changed.any():
            return (
                f"{where} changed generated position(s) "
                f"{_generated(changed.nonzero()[:, 0], P)} of row {r}, which held a token "
                "already; expected it to stay: a committed token never changes, only masked "
                "positions are candidates."
            )
        new = (before[r] == M) & (got[r] != M)  # (L,) what the learner's step revealed
        outside = new.clone()
        outside[lo:hi] = False
        if outside.any():
            bounds = ""
            edge = [int(i) - P for i in outside.nonzero()[:, 0]]
            if all(e in (lo - P - 1, hi - P) for e in edge):
                bounds = (
                    f" Position(s) {edge} sit just outside the block's bounds: block b covers "
                    "generated positions b * block_length up to (b + 1) * block_length - 1, "
                    "that is canvas positions P + b * block_length up to, not including, "
                    "P + (b + 1) * block_length."
                )
            return (
                f"{where} revealed generated position(s) "
                f"{_generated(outside.nonzero()[:, 0], P)} of row {r}, outside the current block; "
                "expected only masks of the current block to be candidates. The model still "
                "sees the masks to the right, but they stay masked until their own block comes."
                + bounds
            )
        want = trace.revealed[step][r]
        if int(new.sum()) != int(want.sum()):
            schedule = [int(trace.revealed[s][r].sum()) for s in block_steps]
            return (
                f"{where} revealed {int(new.sum())} token(s) in row {r}, expected "
                f"{int(want.sum())}: this block's schedule is {schedule} over its "
                f"{len(block_steps)} steps. Each block gets its own schedule, computed from the "
                "masks it holds when it starts, over its share of the steps. This block holds "
                f"canvas positions {lo}..{hi - 1} (after the {P}-token prompt); bounds counted "
                "from another start count other masks."
            )
        if not torch.equal(new, want):
            missed = set(_generated(want.nonzero()[:, 0], P)) - set(
                _generated(new.nonzero()[:, 0], P)
            )
            edge = sorted(missed & {lo - P, hi - P - 1})
            bounds = (
                f" Generated position(s) {edge}, at the edge of the block, were candidates you "
                f"left out: check the block's bounds (canvas positions {lo}..{hi - 1})."
                if edge
                else ""
            )
            return (
                f"{where} revealed generated positions {_generated(new.nonzero()[:, 0], P)} of "
                f"row {r}, expected {_generated(want.nonzero()[:, 0], P)}: the right number of "
                "tokens inside the block, but not the most confident ones. Score every masked "
                "position by the probability (a softmax over the vocabulary, in float64) of the "
                "token proposed there, and commit the highest scores." + bounds
            )
        if not torch.equal(got[r], expected[r]):
            wrong = (got[r] != expected[r]).nonzero()[:, 0]
            return (
                f"{where} revealed the right positions of row {r} but committed the ids "
                f"{got[r, wrong].tolist()} at generated positions {_generated(wrong, P)}, "
                f"expected {expected[r, wrong].tolist()}: at temperature 0 the proposal is the "
                "most likely token, the argmax of the logits."
            )
    return f"{where}: the canvas differs from generate's"


def _block_loop_difference(
    calls: list[torch.Tensor], result: torch.Tensor | None, trace: Trace, block_length: int
) -> str | None:
    """The first place where the learner's run (the canvases it gave the model, then its
    result, None if it raised) leaves generate's: a sentence, or None where they agree."""
    expected = trace.canvases  # K + 1: the start, then the canvas after each step
    K = trace.num_steps
    seen = calls + ([] if result is None else [result])
    for i, canvas in enumerate(seen[: K + 1]):
        what = f"model call {i + 1}" if i < len(calls) else "the canvas your function returned"
        if tuple(canvas.shape) != tuple(expected[i].shape):
            return (
                f"{what} got shape {tuple(canvas.shape)}, expected the whole canvas "
                f"{tuple(expected[i].shape)} (the prompt, then gen_length positions): the model "
                "sees every position at every step."
            )
        if torch.equal(canvas.long(), expected[i]):
            continue
        if i == 0:
            wrong = (canvas.long() != expected[0]).nonzero()[:3].tolist()
            return (
                f"{what}: expected the prompt followed by gen_length mask tokens, found other "
                f"ids at (row, position) {wrong} (first ones)."
            )
        story = _step_difference(
            seen[i - 1].long(), canvas.long(), expected[i], trace, i - 1, block_length
        )
        return f"{story} (seen at {what})."
    if len(calls) != K:
        return (
            f"your function called the model {len(calls)} times, expected {K}: one call on the "
            "whole canvas per step, steps in all (split evenly over the blocks)."
        )
    return None


def _calls_note(calls: list, K: int) -> str:
    return (
        ""
        if len(calls) == K
        else (
            f"\n  (Your function called the model {len(calls)} times; generate calls it once per "
            f"step, {K} times here.)"
        )
    )


def check_block_loop(fn: Callable, model: Callable, tok) -> CheckResult:
    """Exercise 2.2: fn(model, prompt (B, P), gen_length, block_length, steps, mask_id) -> the
    canvas (B, P + gen_length) of minillada.sampling.generate.generate at temperature 0 with
    low-confidence remasking; compared with it at every model call on BLOCK_LOOP_CASES."""
    device = model_device(model)
    n = len(BLOCK_LOOP_CASES)
    for c, (description, texts, G, BL, S) in enumerate(BLOCK_LOOP_CASES):
        prompt = torch.stack([tok.encode(t) for t in texts]).to(device)  # (B, P)
        _, trace = generate(model, prompt, G, BL, S, tok.mask_id, trace=True)
        recorder = _RecordingModel(model)
        name = f"Exercise 2.2: case {c + 1}/{n} ({description}, gen_length={G}, block_length={BL}, "
        name += f"steps={S})"
        try:
            with torch.no_grad():
                got = fn(recorder, prompt.clone(), G, BL, S, tok.mask_id)
        except NotImplementedError:
            print(
                "Exercise 2.2 not attempted yet; the lesson continues with "
                "minillada.sampling.generate.generate."
            )
            return CheckResult(False)
        except Exception as err:
            story = _block_loop_difference(recorder.canvases, None, trace, BL)
            first = f"{story}\n  It then raised" if story else "your function raised"
            raise ExerciseFailed(
                f"{name}:\n{first} {type(err).__name__}: {err}{_calls_note(recorder.canvases, S)}"
            ) from err
        if not torch.is_tensor(got):
            raise ExerciseFailed(
                f"{name}: expected the final canvas as a tensor, got {short_repr(got)}"
            )
        story = _block_loop_difference(recorder.canvases, got.detach().cpu(), trace, BL)
        if story is not None:
            raise ExerciseFailed(f"{name}:\n{story}{_calls_note(recorder.canvases, S)}")
    print(
        f"Exercise 2.2 passed: {n} settings agree token for token with "
        "minillada.sampling.generate.generate, at every step."
    )
    return CheckResult(True)


# --- Exercise 2.3: the largest Gumbel noise of a dtype ------------------------------------------


def gumbel_cap(dtype: torch.dtype) -> float:
    """The largest Gumbel noise -log(-log u) that a uniform u < 1 of ``dtype`` can give: u is at
    most the largest number of the dtype below 1, 1 - 2^-p for a p-bit significand (torch.rand
    returns multiples of 2^-p in [0, 1)). Computed in float64 from that u, with log1p."""
    one = torch.tensor(1.0, dtype=dtype)
    u_max = torch.nextafter(one, torch.tensor(0.0, dtype=dtype)).item()  # exact in float64
    return -math.log(-math.log1p(u_max - 1.0))  # u_max - 1 is exact: -2^-p


def check_gumbel_cap(fn: Callable) -> CheckResult:
    """Exercise 2.3: fn(dtype) -> the largest Gumbel noise a uniform of that dtype can give, for
    float32, float64 and two dtypes the lesson does not print (float16, bfloat16). To 0.05
    nats: a computation inside a 16-bit dtype is that close (bfloat16: 0.012); using 1 - eps
    (the second largest value below 1, eps = 2^(1-p)) is off by log 2 = 0.69."""
    cases = [
        Case("float32: the dtype of the flawed sampler", (torch.float32,)),
        Case("float64: the dtype the course samples in", (torch.float64,)),
        Case("float16 (11-bit significand)", (torch.float16,)),
        Case("bfloat16 (8-bit significand)", (torch.bfloat16,)),
    ]

    def learner(dtype):
        got = fn(dtype)
        return float(got) if torch.is_tensor(got) and got.numel() == 1 else got

    def compare(expected, got):
        assert_same(expected, got, atol=0.05, rtol=0.0)

    return check("Exercise 2.3", learner, gumbel_cap, cases, "the exact caps", compare=compare)


# --- Exercise 2.4: block length at few steps -----------------------------------------------------

BLOCK_LENGTHS = (8, 16, 32, 64)  # the experiment's settings
EXPERIMENT_GEN_LENGTH, EXPERIMENT_STEPS = 64, 8  # 8 characters committed per step


def _continuations(model: Callable, tok, prompts: torch.Tensor, block_length: int) -> list[str]:
    out = generate(
        model, prompts, EXPERIMENT_GEN_LENGTH, block_length, EXPERIMENT_STEPS, tok.mask_id
    )
    return [tok.decode(r.tolist()) for r in out[:, prompts.shape[1] :]]


def block_length_quality(
    model: Callable, tok, prompts: torch.Tensor, vocab: set[str], block_length: int
) -> tuple[float, float]:
    """Exercise 2.4's measurement at one block length: greedy continuations of ``prompts``
    (B, P), EXPERIMENT_GEN_LENGTH characters in EXPERIMENT_STEPS steps -> (known-word fraction,
    character entropy in bits) of the generated characters, by char_quality."""
    q = char_quality(_continuations(model, tok, prompts, block_length), vocab)
    return q.known_words, q.entropy_bits


def known_words_per_prompt(
    model: Callable, tok, prompts: torch.Tensor, vocab: set[str], block_length: int
) -> torch.Tensor:
    """The same continuations as ``block_length_quality``, scored one prompt at a time: (B,)
    float64 known-word fractions, for a paired comparison of two block lengths on the same
    prompts."""
    return torch.tensor(
        [
            char_quality([t], vocab).known_words
            for t in _continuations(model, tok, prompts, block_length)
        ],
        dtype=torch.float64,
    )


def check_block_length_experiment(
    fn: Callable, model: Callable, tok, prompts: torch.Tensor, vocab: set[str]
) -> CheckResult:
    """Exercise 2.4: fn(block_lengths) -> {block_length: (known-word fraction, character entropy)}
    of the greedy continuations at each block length. Verifies the measurement and prints it;
    what it shows is the lesson's to discuss."""
    got = run_experiment("Exercise 2.4", fn, list(BLOCK_LENGTHS))
    if got is None:
        return CheckResult(False)
    expected = {}
    for b in BLOCK_LENGTHS:
        expected[b] = block_length_quality(model, tok, prompts, vocab, b)
        try:
            known, entropy = (float(v) for v in got[b])
        except (TypeError, ValueError):
            raise ExerciseFailed(
                f"Exercise 2.4: block length {b}: expected (known-word fraction, character "
                f"entropy), got {short_repr(got[b])}"
            ) from None
        # Both sides compute the same function of the same integer counts: any difference
        # beyond rounding means other samples.
        if abs(known - expected[b][0]) > 1e-12 or abs(entropy - expected[b][1]) > 1e-9:
            raise ExerciseFailed(
                f"Exercise 2.4: block length {b}: expected known words {expected[b][0]:.4f} and "
                f"entropy {expected[b][1]:.4f} bits, got {known:.4f} and {entropy:.4f}. Generate "
                f"{EXPERIMENT_GEN_LENGTH} characters after every prompt in {EXPERIMENT_STEPS} "
                "steps at temperature 0, and score only the generated characters (not the "
                "prompts), all rows together, with char_quality."
            )
    table = ", ".join(
        f"{expected[b][0]:.1%} / {expected[b][1]:.2f} bits (block {b})" for b in BLOCK_LENGTHS
    )
    print(
        f"Exercise 2.4 passed: your measurements agree with the library's. Known words / "
        f"character entropy: {table}, over {len(prompts)} greedy continuations of "
        f"{EXPERIMENT_GEN_LENGTH} characters in {EXPERIMENT_STEPS} steps."
    )
    return CheckResult(True)
