"""Lesson 2's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import math
from functools import cache, partial

import pytest
import torch
from checker_cases import assert_fails, ids, solution_and_stub_tests

from minillada.checkpoints.shipped import load_char_shakespeare
from minillada.data.downloads import load_text
from minillada.evaluation.char_quality import char_quality, vocabulary
from minillada.exercises import ExerciseFailed, lesson2
from minillada.sampling.generate import generate
from minillada.sampling.primitives import num_transfer_tokens, positions_to_reveal

# The lesson's model: Exercise 2.2 runs the learner's loop on it (it is small: 0.8M parameters).
CHAR_MODEL, CHAR_TOKENIZER = load_char_shakespeare()
CHAR_MODEL.eval()
check_block_loop = partial(lesson2.check_block_loop, model=CHAR_MODEL, tok=CHAR_TOKENIZER)

# --- the solutions, as in notebooks/solutions/02_sampling.ipynb ----------------------------------


def transfer_schedule(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    base = num_masked[:, None] // steps  # (B, 1)
    remainder = num_masked[:, None] % steps
    return base + (torch.arange(steps)[None, :] < remainder).long()  # (B, steps)


def block_loop(model, prompt, gen_length, block_length, steps, mask_id):
    B, P = prompt.shape
    x = torch.cat([prompt, torch.full((B, gen_length), mask_id, device=prompt.device)], dim=1)
    num_blocks = gen_length // block_length
    for b in range(num_blocks):
        start, end = P + b * block_length, P + (b + 1) * block_length
        schedule = num_transfer_tokens((x[:, start:end] == mask_id).sum(dim=1), steps // num_blocks)
        for k in schedule.T:  # (B,) tokens to reveal in each row at this step
            with torch.no_grad():
                logits = model(x)  # (B, L, V)
            x0 = logits.argmax(dim=-1)  # (B, L)
            p = logits.double().softmax(dim=-1).gather(-1, x0[..., None])[..., 0]  # (B, L)
            confidence = torch.full_like(p, -math.inf)
            masked = x[:, start:end] == mask_id
            confidence[:, start:end] = torch.where(masked, p[:, start:end], -math.inf)
            x = torch.where(positions_to_reveal(confidence, k), x0, x)
    return x


def gumbel_cap(dtype: torch.dtype) -> float:
    one = torch.tensor(1.0, dtype=dtype)
    u_max = torch.nextafter(one, torch.tensor(0.0, dtype=dtype)).item()  # the largest u < 1
    return -math.log(-math.log(u_max))  # float64 arithmetic on an exactly representable u


# --- the stubs, as in notebooks/02_sampling.ipynb ------------------------------------------------


def transfer_schedule_stub(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    raise NotImplementedError("Exercise 2.1: write the transfer schedule for a batch")


def block_loop_stub(model, prompt, gen_length, block_length, steps, mask_id):
    raise NotImplementedError("Exercise 2.2: write the semi-autoregressive block loop")


def gumbel_cap_stub(dtype: torch.dtype) -> float:
    raise NotImplementedError("Exercise 2.3: the largest noise a uniform of this dtype can give")


EXERCISES = [
    ("2.1", lesson2.check_transfer_schedule, transfer_schedule, transfer_schedule_stub),
    ("2.2", check_block_loop, block_loop, block_loop_stub),
    ("2.3", lesson2.check_gumbel_cap, gumbel_cap, gumbel_cap_stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- Exercise 2.1: transfer_schedule -------------------------------------------------------------


def remainder_on_last_steps(num_masked, steps):  # 10 over 4 -> 2, 2, 3, 3
    base = num_masked[:, None] // steps
    remainder = num_masked[:, None] % steps
    return base + (torch.arange(steps)[None, :] >= steps - remainder).long()


def off_by_one(num_masked, steps):  # <= remainder: one extra token -> 3, 3, 3, 2
    base = num_masked[:, None] // steps
    remainder = num_masked[:, None] % steps
    return base + (torch.arange(steps)[None, :] <= remainder).long()


def drops_the_remainder(num_masked, steps):  # floor division only: 2, 2, 2, 2
    return (num_masked[:, None] // steps).expand(-1, steps)


def rounds_the_mean(num_masked, steps):  # round(10 / 4) = 2 on every step
    return (num_masked[:, None] / steps).round().long().expand(-1, steps)


def remainder_all_on_first_step(num_masked, steps):  # 4, 2, 2, 2: not as even as possible
    out = (num_masked[:, None] // steps).repeat(1, steps)
    out[:, 0] += num_masked % steps
    return out


SCHEDULE_MISTAKES = [
    remainder_on_last_steps,
    off_by_one,
    drops_the_remainder,
    rounds_the_mean,
    remainder_all_on_first_step,
]


@pytest.mark.parametrize("mistake", SCHEDULE_MISTAKES, ids=ids(SCHEDULE_MISTAKES))
def test_transfer_schedule_mistake_fails(mistake):
    assert_fails(
        lesson2.check_transfer_schedule,
        mistake,
        "2.1",
        r"case 1/5 \(10 masks over 4 steps -> 3, 3, 2, 2\).*\n.*values differ.*\n"
        r"  expected tensor\(\[\[3, 3, 2, 2\]\]\)",
    )


# --- Exercise 2.2: block_loop --------------------------------------------------------------------


def a_loop(
    score,
    *,
    per_block=True,
    in_block=True,
    calls_per_block=None,
    all_steps_per_block=False,
    whole_canvas=True,
    bounds=None,
    keep_prompt=True,
    schedule_of=None,
):
    """The solution with one thing changed, to build the mistakes below. score(logits, x, x0) ->
    (B, L) float64 scores; per_block=False: one schedule over the whole canvas; in_block=False:
    every masked position is a candidate; calls_per_block=1: the model called once per block;
    all_steps_per_block: every block runs
    all the steps (instead of steps / blocks); whole_canvas=False: the model
    sees the prompt and the current block only; bounds(P, b, block_length) -> (start, end): other
    block bounds; keep_prompt=False: every position (prompt too) takes the proposal wherever it is
    not masked... as a learner who writes x0 over the canvas would; schedule_of(n, spb): another
    rule for the tokens per step."""

    def loop(model, prompt, gen_length, block_length, steps, mask_id):
        B, P = prompt.shape
        x = torch.cat([prompt, torch.full((B, gen_length), mask_id)], dim=1)
        num_blocks = gen_length // block_length
        spb = steps if all_steps_per_block else steps // num_blocks
        canvas_schedule = num_transfer_tokens(torch.full((B,), gen_length), steps)
        for b in range(num_blocks):
            start, end = P + b * block_length, P + (b + 1) * block_length
            if bounds is not None:
                start, end = bounds(P, b, block_length)
            schedule = num_transfer_tokens((x[:, start:end] == mask_id).sum(dim=1), spb)
            if schedule_of is not None:
                schedule = schedule_of((x[:, start:end] == mask_id).sum(dim=1), spb)
            for step in range(spb):
                if calls_per_block is None or step == 0:
                    logits = model(x if whole_canvas else x[:, :end])  # else: fails below
                x0 = logits.argmax(dim=-1)
                p = score(logits, x, x0)
                candidate = x == mask_id
                if in_block:
                    candidate[:, :start] = candidate[:, end:] = False
                confidence = torch.where(candidate, p, -math.inf)
                k = canvas_schedule[:, b * spb + step] if not per_block else schedule[:, step]
                x = torch.where(positions_to_reveal(confidence, k), x0, x)
                if not keep_prompt:  # the proposals written over the prompt too
                    x[:, :P] = x0[:, :P]
        return x

    return loop


def probability(logits, x, x0):
    return logits.double().softmax(dim=-1).gather(-1, x0[..., None])[..., 0]


def probability_of_the_canvas_token(logits, x, x0):  # p(x), the mask's probability, not p(x0)
    return logits.double().softmax(dim=-1).gather(-1, x[..., None])[..., 0]


def raw_logit(logits, x, x0):  # the top logit, not its probability
    return logits.double().max(dim=-1).values


def least_confident_first(logits, x, x0):  # "low confidence" read as "reveal the least confident"
    return -probability(logits, x, x0)


def softmax_over_positions(logits, x, x0):  # softmax(dim=1): over the canvas, not the vocabulary
    return logits.double().softmax(dim=1).gather(-1, x0[..., None])[..., 0]


WHOLE_CANVAS = r"case 2/6 \(3 blocks of 10 in 9 steps.*\):\nstep 2 of block 1 .* revealed 4 token"
LOOP_MISTAKES = [
    (a_loop(probability, per_block=False), WHOLE_CANVAS + r".*expected 3: this block's schedule "
     r"is \[4, 3, 3\]"),
    (a_loop(probability, in_block=False), r"case 2/6 .*\n.* revealed generated position\(s\) "
     r"\[10\] of row 0, outside the current block"),
    (a_loop(probability_of_the_canvas_token), r"case 1/6 \(one block of 32.*\n.*not the most "
     r"confident ones"),
    (a_loop(raw_logit), r"case 1/6 .*\n.*not the most confident ones"),
    (a_loop(least_confident_first), r"case 1/6 .*\n.*not the most confident ones"),
    (a_loop(softmax_over_positions), r"case \d/6 .*\n.*not the most confident ones"),
    (a_loop(probability, calls_per_block=1), r"case 1/6 .*\n.*revealed 32 token\(s\) in row 0, "
     r"expected 4(.|\n)*called the model 1 times; generate calls it once per step, 8 times"),
    (a_loop(probability, all_steps_per_block=True), r"case 2/6 .*\n.*revealed 2 token\(s\) in "
     r"row 0, expected 4"),
    (a_loop(probability, whole_canvas=False), r"case 2/6 .*\nmodel call 1 got shape \(1, 17\), "
     r"expected the whole canvas \(1, 37\)"),
]  # fmt: skip


def remainder_last(num_masked, steps):  # 10 over 3 -> 3, 3, 4: the remainder on the last steps
    return num_transfer_tokens(num_masked, steps).flip(dims=[1])


def block_length_over_steps(num_masked, steps):  # the same count every step, remainder dropped
    return (num_masked[:, None] // steps).expand(-1, steps)


OUT_OF_BLOCK = r"revealed generated position\(s\) \[\d+\] of row 0, outside the current block"
LOOP_MISTAKES += [
    (a_loop(probability, bounds=lambda P, b, n: (b * n, (b + 1) * n)),
     r"case 1/6 \(one block of 32.*\n.*revealed 3 token\(s\) in row 0, expected 4.*"
     r"This block holds canvas positions 7\.\.38 \(after the 7-token prompt\)"),
    (a_loop(probability, bounds=lambda P, b, n: (P + b * n, P + (b + 1) * n + 1)),
     r"case 2/6 .*\n.*" + OUT_OF_BLOCK + r".*just outside the block's bounds"),
    (a_loop(probability, bounds=lambda P, b, n: (P + b * n - 1, P + (b + 1) * n - 1)),
     r"case 1/6 .*\n.*revealed 3 token\(s\) in row 0, expected 4.*This block holds canvas "
     r"positions 7\.\.38"),
    (a_loop(probability, bounds=lambda P, b, n: (P + b * n + 1, P + (b + 1) * n + 1)),
     r"case 1/6 .*\n.*not the most confident ones.* Generated position\(s\) \[0\], at the edge "
     r"of the block, were candidates you left out"),
    (a_loop(probability, keep_prompt=False), r"case 1/6 .*\n.*changed prompt position\(s\) "
     r"\[.*\] of row 0; expected the prompt .* to stay as given"),
    (a_loop(probability, schedule_of=remainder_last), r"case 2/6 .*\n.*revealed 3 token\(s\) in "
     r"row 0, expected 4: this block's schedule is \[4, 3, 3\]"),
    (a_loop(probability, schedule_of=block_length_over_steps), r"case 2/6 .*\n.*revealed 3 "
     r"token\(s\) in row 0, expected 4"),
]  # fmt: skip
LOOP_MISTAKE_IDS = [
    "whole_canvas_schedule", "reveals_outside_the_block", "probability_of_the_canvas_token",
    "raw_logit", "least_confident_first", "softmax_over_positions", "one_call_per_block",
    "all_steps_in_every_block", "model_sees_prompt_and_block_only",
    "block_bounds_without_the_prompt", "block_end_one_too_far", "block_one_position_early",
    "block_one_position_late", "writes_over_the_prompt", "remainder_on_the_last_steps",
    "remainder_dropped",
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", LOOP_MISTAKES, ids=LOOP_MISTAKE_IDS)
def test_block_loop_mistake_fails(mistake, match):
    assert_fails(check_block_loop, mistake, "2.2", match)


def test_block_loop_ignoring_the_blocks_fails():
    def one_block(model, prompt, gen_length, block_length, steps, mask_id):
        return generate(model, prompt, gen_length, gen_length, steps, mask_id)

    assert_fails(
        check_block_loop,
        one_block,
        "2.2",
        r"case 2/6 .*\n.*(outside the current block"
        r"|revealed \d+ token)",
    )


def test_a_loop_that_raises_is_reported_with_the_case():
    def broken(model, prompt, gen_length, block_length, steps, mask_id):
        model(prompt)
        raise RuntimeError("oops")

    message = assert_fails(check_block_loop, broken, "2.2", r"case 1/6 .*\n")
    assert "RuntimeError: oops" in message


def test_the_library_itself_passes(capsys):
    def library(model, prompt, gen_length, block_length, steps, mask_id):
        return generate(model, prompt, gen_length, block_length, steps, mask_id)

    assert check_block_loop(library)
    assert "Exercise 2.2 passed: 6 settings agree token for token" in capsys.readouterr().out


# --- Exercise 2.3: gumbel_cap --------------------------------------------------------------------


def one_minus_eps(dtype):  # 1 - eps is the second largest value below 1: off by log 2
    return -math.log(-math.log(1 - torch.finfo(dtype).eps))


def computed_in_float32(dtype):  # u = 1 - 2^-53 rounds to 1 in float32: log(1) = 0, noise inf
    u = torch.nextafter(torch.tensor(1.0, dtype=dtype), torch.tensor(0.0, dtype=dtype)).float()
    return -torch.log(-torch.log(u)).item()


def smallest_u(dtype):  # the smallest positive u: the floor of the noise, not its cap
    return -math.log(-math.log(torch.finfo(dtype).tiny))


def a_typed_in_float32_cap(dtype):  # the float32 answer everywhere
    return 16.6355


CAP_MISTAKES = [
    (one_minus_eps, r"case 1/4 \(float32: the dtype of the flawed sampler\):\n.*expected "
     r"16\.63\d+, got 15\.94"),
    (computed_in_float32, r"case 2/4 \(float64: the dtype the course samples in\):\n.*got inf"),
    (smallest_u, r"case 1/4 \(float32.*\n.*expected 16\.63"),
    (a_typed_in_float32_cap, r"case 2/4 \(float64"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", CAP_MISTAKES, ids=ids(CAP_MISTAKES))
def test_gumbel_cap_mistake_fails(mistake, match):
    assert_fails(lesson2.check_gumbel_cap, mistake, "2.3", match)


def test_gumbel_cap_in_the_dtype_itself_passes(capsys):
    # computing -log(-log u) inside a 16-bit dtype is a rounding, not a mistake in reasoning
    def in_the_dtype(dtype):
        u = torch.nextafter(torch.tensor(1.0, dtype=dtype), torch.tensor(0.0, dtype=dtype))
        return -torch.log(-torch.log(u)).item()

    assert lesson2.check_gumbel_cap(in_the_dtype)
    assert "Exercise 2.3 passed: 4 cases" in capsys.readouterr().out


def test_gumbel_cap_values():
    assert lesson2.gumbel_cap(torch.float32) == pytest.approx(16.6355, abs=1e-4)
    assert lesson2.gumbel_cap(torch.float64) == pytest.approx(36.7368, abs=1e-4)
    # torch.rand in the dtype never returns more than that u
    g = torch.Generator().manual_seed(0)
    u = torch.rand(1_000_000, generator=g, dtype=torch.float32)
    assert (-torch.log(-torch.log(u.double()))).max().item() <= lesson2.gumbel_cap(torch.float32)


# --- Exercise 2.4: the block length experiment ---------------------------------------------------


@pytest.fixture(scope="module")
def experiment(tinyshakespeare):
    text = load_text("tinyshakespeare")
    split = int(0.9 * len(text))
    train_text, val_text = text[:split], text[split:]
    # as in the lesson: the first 16 characters of every 40th line that starts with a letter
    line_starts = [
        i + 1 for i, c in enumerate(val_text[:-1]) if c == "\n" and val_text[i + 1].isalpha()
    ]
    starts = line_starts[::40][:16]
    prompts = torch.stack([CHAR_TOKENIZER.encode(val_text[s : s + 16]) for s in starts])
    return prompts, vocabulary(train_text)


@cache
def greedy(prompts_key, block_length, steps):
    prompts = torch.tensor(prompts_key)
    return generate(CHAR_MODEL, prompts, 64, block_length, steps, CHAR_TOKENIZER.mask_id)


def measure(prompts, vocab, block_length, steps=8, with_prompt=False, per_row=False):
    out = greedy(tuple(map(tuple, prompts.tolist())), block_length, steps)  # the mistakes reuse it
    rows = out if with_prompt else out[:, prompts.shape[1] :]
    texts = [CHAR_TOKENIZER.decode(r.tolist()) for r in rows]
    if per_row:  # the mean of every row's fraction, not the fraction over all words
        qs = [char_quality([t], vocab) for t in texts]
        return sum(q.known_words for q in qs) / len(qs), char_quality(texts, vocab).entropy_bits
    q = char_quality(texts, vocab)
    return q.known_words, q.entropy_bits


def run(experiment, **kwargs):
    prompts, vocab = experiment
    fn = lambda blocks: {b: measure(prompts, vocab, b, **kwargs) for b in blocks}  # noqa: E731
    return lesson2.check_block_length_experiment(fn, CHAR_MODEL, CHAR_TOKENIZER, prompts, vocab)


def test_the_experiment_passes_and_states_what_it_measured(capsys, experiment):
    assert run(experiment)
    out = capsys.readouterr().out
    assert out.startswith("Exercise 2.4 passed: your measurements agree with the library's. Known ")
    for verdict in ("rises", "falls", "better", "worse", "longer block lets"):
        assert verdict not in out  # the conclusion is the lesson's discussion, not the checker's


def test_known_words_per_prompt_scores_the_same_continuations(experiment):
    prompts, vocab = experiment
    per_prompt = lesson2.known_words_per_prompt(CHAR_MODEL, CHAR_TOKENIZER, prompts, vocab, 64)
    assert per_prompt.shape == (16,) and per_prompt.dtype == torch.float64
    texts = [CHAR_TOKENIZER.decode(r.tolist()) for r in greedy(
        tuple(map(tuple, prompts.tolist())), 64, 8)[:, prompts.shape[1]:]]  # fmt: skip
    assert per_prompt[3].item() == char_quality([texts[3]], vocab).known_words


def test_the_experiment_stub_is_not_attempted(capsys, experiment):
    def stub(block_lengths):
        raise NotImplementedError("Exercise 2.4: measure the quality at each block length")

    prompts, vocab = experiment
    check = lesson2.check_block_length_experiment
    assert not check(stub, CHAR_MODEL, CHAR_TOKENIZER, prompts, vocab)
    assert "Exercise 2.4 not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mistake",
    [dict(with_prompt=True), dict(per_row=True), dict(steps=16)],
    ids=["scores_the_prompt_too", "averages_per_row", "other_steps"],
)
def test_the_experiment_refuses_other_measurements(experiment, mistake):
    with pytest.raises(
        ExerciseFailed,
        match=r"^Exercise 2.4: block length \d+: expected known "
        r"words .* Generate 64 characters after every prompt in 8 steps",
    ):
        run(experiment, **mistake)


def test_the_experiment_wants_every_block_length(experiment):
    prompts, vocab = experiment
    with pytest.raises(ExerciseFailed, match=r"expected a dict with the keys \[8, 16, 32, 64\]"):
        lesson2.check_block_length_experiment(
            lambda blocks: {8: (0.5, 3.0)}, CHAR_MODEL, CHAR_TOKENIZER, prompts, vocab
        )
