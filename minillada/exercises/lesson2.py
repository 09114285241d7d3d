"""Checkers for lesson 2 (notebooks/02_sampling.ipynb)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from minillada.evaluation.char_quality import char_quality
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
from minillada.runtime import model_device
from minillada.sampling.generate import generate
from minillada.sampling.primitives import gumbel_argmax_with_noise, num_transfer_tokens
from minillada.sampling.remasking import margin_confidence
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
# masks over 3 steps (4, 3, 3) one that schedules the whole canvas at once (30 over 9: 4, 4, 4, ..).
BLOCK_LOOP_CASES = [
    ("one block of 32 (pure diffusion), 8 steps", ["ROMEO:\n"], 32, 32, 8),
    ("3 blocks of 10 in 9 steps: 4, 3, 3 tokens per step in each block", ["ROMEO:\n"], 30, 10, 9),
    ("8 blocks of 4, one step each", ["ROMEO:\n"], 32, 4, 8),
    ("3 blocks of 8, one token per step", ["First Citizen:\n"], 24, 8, 24),
    ("a batch of two prompts, 5 blocks of 8 in 15 steps", ["ROMEO:\n", "JULIET:"], 40, 8, 15),
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
            return (
                f"{where} revealed generated position(s) "
                f"{_generated(outside.nonzero()[:, 0], P)} of row {r}, outside the current block; "
                "expected only masks of the current block to be candidates. The model still "
                "sees the masks to the right, but they stay masked until their own block comes."
            )
        want = trace.revealed[step][r]
        if int(new.sum()) != int(want.sum()):
            schedule = [int(trace.revealed[s][r].sum()) for s in block_steps]
            return (
                f"{where} revealed {int(new.sum())} token(s) in row {r}, expected "
                f"{int(want.sum())}: this block's schedule is {schedule} over its "
                f"{len(block_steps)} steps. Each block gets its own schedule, computed from the "
                "masks it holds when it starts, over its share of the steps."
            )
        if not torch.equal(new, want):
            return (
                f"{where} revealed generated positions {_generated(new.nonzero()[:, 0], P)} of "
                f"row {r}, expected {_generated(want.nonzero()[:, 0], P)}: the right number of "
                "tokens inside the block, but not the most confident ones. Score every masked "
                "position by the probability (a softmax over the vocabulary, in float64) of the "
                "token proposed there, and commit the highest scores."
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


def check_gumbel_max(fn: Callable) -> CheckResult:
    """Exercise 2.3: fn(logits, temperature, u) -> argmax(logits / T - log(-log u)) in float64;
    plain argmax at T = 0."""
    g = seeded(3)
    logits = torch.randn(4, 6, 20, generator=g)
    u = torch.rand(4, 6, 20, generator=g, dtype=torch.float64)
    # Two uniforms that float32 cannot tell apart (both round to 1.0): only float64 picks id 2.
    near_one = torch.tensor([[0.5, 1 - 2e-10, 1 - 1e-10]], dtype=torch.float64)
    cases = [
        Case("temperature 1", (logits, 1.0, u)),
        Case("temperature 0.5 (sharper)", (logits, 0.5, u)),
        Case("temperature 2 (flatter)", (logits, 2.0, u)),
        Case("temperature 0 is a plain argmax of the logits (u is ignored)", (logits, 0.0, u)),
        Case(
            "float32 logits, float64 uniforms near 1: the noise must be computed in float64",
            (torch.zeros(1, 3), 1.0, near_one),
        ),
    ]
    return check(
        "Exercise 2.3",
        fn,
        gumbel_argmax_with_noise,
        cases,
        "minillada.sampling.primitives.gumbel_argmax_with_noise",
    )


def check_margin_confidence(fn: Callable) -> CheckResult:
    """Exercise 2.4: fn(logits (B, W, V)) -> (B, W) float64 p1 - p2 of softmax(logits)."""
    g = seeded(5)
    tie = torch.zeros(1, 2, 5)
    tie[0, 0, :2] = 3.0  # two equally likely best tokens: margin 0
    tie[0, 1, 4] = 40.0  # one certain token: margin ~1
    cases = [
        Case("random logits", (torch.randn(2, 7, 11, generator=g),)),
        Case("a tie at the top (margin 0) and a certain token (margin 1)", (tie,)),
        Case("large logits (use a stable softmax)", (torch.randn(1, 3, 5, generator=g) * 300,)),
        Case(
            "logits above 710, where exp overflows even in float64",
            (torch.randn(1, 3, 5, generator=g, dtype=torch.float64) * 2000,),
        ),
    ]
    return check(
        "Exercise 2.4",
        fn,
        margin_confidence,
        cases,
        "minillada.sampling.remasking.margin_confidence",
        compare=_same_in_float64,
    )


def _same_in_float64(expected: torch.Tensor, got: torch.Tensor) -> None:
    """The right values, and computed in float64, as every confidence score of the sampler is: to
    1e-12, which float64 arithmetic meets and a float32 softmax cast to float64 (off by about
    1e-8) does not."""
    assert_same(expected, got, atol=1e-12, rtol=1e-10)
    if got.dtype != torch.float64:
        raise ExerciseFailed(
            f"result: expected a float64 tensor, got {got.dtype}; compute the softmax in "
            "float64 (logits.double()), as minillada's scores are."
        )


# --- Exercise 2.5: block length at few steps -----------------------------------------------------

BLOCK_LENGTHS = (8, 16, 32, 64)  # the experiment's settings
EXPERIMENT_GEN_LENGTH, EXPERIMENT_STEPS = 64, 8  # 8 characters committed per step


def block_length_quality(
    model: Callable, tok, prompts: torch.Tensor, vocab: set[str], block_length: int
) -> tuple[float, float]:
    """Exercise 2.5's measurement at one block length: greedy continuations of ``prompts``
    (B, P), EXPERIMENT_GEN_LENGTH characters in EXPERIMENT_STEPS steps -> (known-word fraction,
    character entropy in bits) of the generated characters, by char_quality."""
    out = generate(
        model, prompts, EXPERIMENT_GEN_LENGTH, block_length, EXPERIMENT_STEPS, tok.mask_id
    )
    q = char_quality([tok.decode(r.tolist()) for r in out[:, prompts.shape[1] :]], vocab)
    return q.known_words, q.entropy_bits


def _direction(values: Sequence[float]) -> str:
    """How a measured sequence moves: one word or phrase, true whatever the numbers are."""
    steps = [b - a for a, b in zip(values[:-1], values[1:], strict=True)]
    if all(d > 0 for d in steps):
        return "rises with every longer block"
    if all(d < 0 for d in steps):
        return "falls with every longer block"
    return "goes up and down"


def check_block_length_experiment(
    fn: Callable, model: Callable, tok, prompts: torch.Tensor, vocab: set[str]
) -> CheckResult:
    """Exercise 2.5: fn(block_lengths) -> {block_length: (known-word fraction, character entropy)}
    of the greedy continuations at each block length; then what the outcome shows."""
    got = run_experiment("Exercise 2.5", fn, list(BLOCK_LENGTHS))
    if got is None:
        return CheckResult(False)
    expected = {}
    for b in BLOCK_LENGTHS:
        expected[b] = block_length_quality(model, tok, prompts, vocab, b)
        try:
            known, entropy = (float(v) for v in got[b])
        except (TypeError, ValueError):
            raise ExerciseFailed(
                f"Exercise 2.5: block length {b}: expected (known-word fraction, character "
                f"entropy), got {short_repr(got[b])}"
            ) from None
        # Both sides compute the same function of the same integer counts: any difference
        # beyond rounding means other samples.
        if abs(known - expected[b][0]) > 1e-12 or abs(entropy - expected[b][1]) > 1e-9:
            raise ExerciseFailed(
                f"Exercise 2.5: block length {b}: expected known words {expected[b][0]:.4f} and "
                f"entropy {expected[b][1]:.4f} bits, got {known:.4f} and {entropy:.4f}. Generate "
                f"{EXPERIMENT_GEN_LENGTH} characters after every prompt in {EXPERIMENT_STEPS} "
                "steps at temperature 0, and score only the generated characters (not the "
                "prompts), all rows together, with char_quality."
            )
    known = [expected[b][0] for b in BLOCK_LENGTHS]
    entropy = [expected[b][1] for b in BLOCK_LENGTHS]
    table = ", ".join(
        f"{k:.1%} / {h:.2f} bits (block {b})"
        for b, k, h in zip(BLOCK_LENGTHS, known, entropy, strict=True)
    )
    first, last = BLOCK_LENGTHS[0], BLOCK_LENGTHS[-1]
    print(
        f"Exercise 2.5 passed: known words / character entropy {table}, over {len(prompts)} "
        f"greedy continuations of {EXPERIMENT_GEN_LENGTH} characters in {EXPERIMENT_STEPS} steps."
        f"\n  From blocks of {first} to {last}, the known-word fraction {_direction(known)} "
        f"({known[0]:.1%} to {known[-1]:.1%}) and the entropy {_direction(entropy)} "
        f"({entropy[0]:.2f} to {entropy[-1]:.2f} bits). With blocks of {first} each step "
        f"commits {first} adjacent characters at once; a longer block lets it choose them among "
        "more positions."
    )
    return CheckResult(True)
