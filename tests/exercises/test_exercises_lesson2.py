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


def gumbel_max(logits: torch.Tensor, temperature: float, u: torch.Tensor) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(dim=-1)
    g = -torch.log(-torch.log(u.double()))
    return (logits.double() / temperature + g).argmax(dim=-1)


def margin(logits: torch.Tensor) -> torch.Tensor:
    top2 = logits.double().softmax(dim=-1).topk(2, dim=-1).values  # (B, W, 2)
    return top2[..., 0] - top2[..., 1]


# --- the stubs, as in notebooks/02_sampling.ipynb ------------------------------------------------


def transfer_schedule_stub(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    raise NotImplementedError("Exercise 2.1: write the transfer schedule for a batch")


def block_loop_stub(model, prompt, gen_length, block_length, steps, mask_id):
    raise NotImplementedError("Exercise 2.2: write the semi-autoregressive block loop")


def gumbel_max_stub(logits: torch.Tensor, temperature: float, u: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError("Exercise 2.3: draw the proposal by Gumbel-max in float64")


def margin_stub(logits: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError("Exercise 2.4: write the margin score")


EXERCISES = [
    ("2.1", lesson2.check_transfer_schedule, transfer_schedule, transfer_schedule_stub),
    ("2.2", check_block_loop, block_loop, block_loop_stub),
    ("2.3", lesson2.check_gumbel_max, gumbel_max, gumbel_max_stub),
    ("2.4", lesson2.check_margin_confidence, margin, margin_stub),
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


def a_loop(score, *, per_block=True, in_block=True, calls_per_block=None,
           all_steps_per_block=False, whole_canvas=True):
    """The solution with one thing changed, to build the mistakes below. score(logits, x, x0) ->
    (B, L) float64 scores; per_block=False: one schedule over the whole canvas; in_block=False:
    every masked position is a candidate; calls_per_block=1: the model called once per block;
    all_steps_per_block: every block runs
    all the steps (instead of steps / blocks); whole_canvas=False: the model
    sees the prompt and the current block only."""

    def loop(model, prompt, gen_length, block_length, steps, mask_id):
        B, P = prompt.shape
        x = torch.cat([prompt, torch.full((B, gen_length), mask_id)], dim=1)
        num_blocks = gen_length // block_length
        spb = steps if all_steps_per_block else steps // num_blocks
        canvas_schedule = num_transfer_tokens(torch.full((B,), gen_length), steps)
        for b in range(num_blocks):
            start, end = P + b * block_length, P + (b + 1) * block_length
            schedule = num_transfer_tokens((x[:, start:end] == mask_id).sum(dim=1), spb)
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


WHOLE_CANVAS = r"case 2/5 \(3 blocks of 10 in 9 steps.*\):\nstep 2 of block 1 .* revealed 4 token"
LOOP_MISTAKES = [
    (a_loop(probability, per_block=False), WHOLE_CANVAS + r".*expected 3: this block's schedule "
     r"is \[4, 3, 3\]"),
    (a_loop(probability, in_block=False), r"case 2/5 .*\n.* revealed generated position\(s\) "
     r"\[10\] of row 0, outside the current block"),
    (a_loop(probability_of_the_canvas_token), r"case 1/5 \(one block of 32.*\n.*not the most "
     r"confident ones"),
    (a_loop(raw_logit), r"case 1/5 .*\n.*not the most confident ones"),
    (a_loop(least_confident_first), r"case 1/5 .*\n.*not the most confident ones"),
    (a_loop(softmax_over_positions), r"case \d/5 .*\n.*not the most confident ones"),
    (a_loop(probability, calls_per_block=1), r"case 1/5 .*\n.*revealed 32 token\(s\) in row 0, "
     r"expected 4(.|\n)*called the model 1 times; generate calls it once per step, 8 times"),
    (a_loop(probability, all_steps_per_block=True), r"case 2/5 .*\n.*revealed 2 token\(s\) in "
     r"row 0, expected 4"),
    (a_loop(probability, whole_canvas=False), r"case 2/5 .*\nmodel call 1 got shape \(1, 17\), "
     r"expected the whole canvas \(1, 37\)"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", LOOP_MISTAKES, ids=[
    "whole_canvas_schedule", "reveals_outside_the_block", "probability_of_the_canvas_token",
    "raw_logit", "least_confident_first", "softmax_over_positions", "one_call_per_block",
    "all_steps_in_every_block", "model_sees_prompt_and_block_only",
])  # fmt: skip
def test_block_loop_mistake_fails(mistake, match):
    assert_fails(check_block_loop, mistake, "2.2", match)


def test_block_loop_ignoring_the_blocks_fails():
    def one_block(model, prompt, gen_length, block_length, steps, mask_id):
        return generate(model, prompt, gen_length, gen_length, steps, mask_id)

    assert_fails(check_block_loop, one_block, "2.2", r"case 2/5 .*\n.*(outside the current block"
                 r"|revealed \d+ token)")


def test_a_loop_that_raises_is_reported_with_the_case():
    def broken(model, prompt, gen_length, block_length, steps, mask_id):
        model(prompt)
        raise RuntimeError("oops")

    message = assert_fails(check_block_loop, broken, "2.2", r"case 1/5 .*\n")
    assert "RuntimeError: oops" in message


def test_the_library_itself_passes(capsys):
    def library(model, prompt, gen_length, block_length, steps, mask_id):
        return generate(model, prompt, gen_length, block_length, steps, mask_id)

    assert check_block_loop(library)
    assert "Exercise 2.2 passed: 5 settings agree token for token" in capsys.readouterr().out


# --- Exercise 2.3: gumbel_max --------------------------------------------------------------------


def float32_noise(logits, temperature, u):  # the noise in float32: uniforms near 1 collapse
    if temperature == 0:
        return logits.argmax(dim=-1)
    g = -torch.log(-torch.log(u.float()))
    return (logits / temperature + g).argmax(dim=-1)


def no_temperature_zero(logits, temperature, u):  # divides by T = 0 instead of a plain argmax
    g = -torch.log(-torch.log(u.double()))
    return (logits.double() / temperature + g).argmax(dim=-1)


def wrong_sign(logits, temperature, u):  # + log(-log u): the noise pushes the wrong way
    if temperature == 0:
        return logits.argmax(dim=-1)
    g = torch.log(-torch.log(u.double()))
    return (logits.double() / temperature + g).argmax(dim=-1)


def multiplies_by_temperature(logits, temperature, u):  # logits * T instead of logits / T
    if temperature == 0:
        return logits.argmax(dim=-1)
    g = -torch.log(-torch.log(u.double()))
    return (logits.double() * temperature + g).argmax(dim=-1)


def scales_the_noise_too(logits, temperature, u):  # (logits + g) / T: T no longer matters
    if temperature == 0:
        return logits.argmax(dim=-1)
    g = -torch.log(-torch.log(u.double()))
    return ((logits.double() + g) / temperature).argmax(dim=-1)


def exponential_noise(logits, temperature, u):  # -log u: one log too few
    if temperature == 0:
        return logits.argmax(dim=-1)
    return (logits.double() / temperature - torch.log(u.double())).argmax(dim=-1)


def adds_noise_to_probabilities(logits, temperature, u):  # softmax first: Gumbel needs logits
    if temperature == 0:
        return logits.argmax(dim=-1)
    g = -torch.log(-torch.log(u.double()))
    return ((logits.double() / temperature).softmax(dim=-1) + g).argmax(dim=-1)


GUMBEL_MISTAKES = [
    (float32_noise, r"case 5/5 \(float32 logits, float64 uniforms near 1: the noise must be "
     r"computed in float64\).*\n.*values differ.*\n  expected tensor\(\[2\]\)"),
    (no_temperature_zero, r"case 4/5 \(temperature 0 is a plain argmax of the logits"),
    (wrong_sign, r"case 1/5 \(temperature 1\).*\n.*values differ"),
    (multiplies_by_temperature, r"case 2/5 \(temperature 0\.5 \(sharper\)\).*\n.*values differ"),
    (scales_the_noise_too, r"case 2/5 \(temperature 0\.5 \(sharper\)\).*\n.*values differ"),
    (exponential_noise, r"case 1/5 \(temperature 1\).*\n.*values differ"),
    (adds_noise_to_probabilities, r"case 1/5 \(temperature 1\).*\n.*values differ"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", GUMBEL_MISTAKES, ids=ids(GUMBEL_MISTAKES))
def test_gumbel_max_mistake_fails(mistake, match):
    assert_fails(lesson2.check_gumbel_max, mistake, "2.3", match)


# --- Exercise 2.4: margin ------------------------------------------------------------------------


def margin_of_logits(logits):  # top-1 minus top-2 logit, not probability
    top2 = logits.double().topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def margin_of_log_probs(logits):  # log p1 - log p2: the same as the logit margin
    top2 = logits.double().log_softmax(dim=-1).topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def unstable_softmax_float32(logits):  # exp overflows in float32 for large logits: inf / inf
    e = logits.exp()
    top2 = (e / e.sum(dim=-1, keepdim=True)).double().topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def max_minus_min(logits):  # top-1 minus the least likely token
    p = logits.double().softmax(dim=-1)
    return p.max(dim=-1).values - p.min(dim=-1).values


def second_distinct_value(logits):  # runner-up = best value below the max: wrong at a tie
    p = logits.double().softmax(dim=-1)
    top = p.max(dim=-1, keepdim=True).values
    return top[..., 0] - p.masked_fill(p == top, -1.0).max(dim=-1).values


def float32_softmax_cast(logits):  # the softmax in float32, only the result cast to float64
    top2 = logits.float().softmax(dim=-1).double().topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def ascending_sort(logits):  # sort() is ascending: p[0] - p[1] are the two least likely
    p = logits.double().softmax(dim=-1).sort(dim=-1).values
    return p[..., 0] - p[..., 1]


MARGIN_MISTAKES = [
    (margin_of_logits, r"case 1/4 \(random logits\).*\n.*values differ"),
    (margin_of_log_probs, r"case 1/4 \(random logits\).*\n.*values differ"),
    (unstable_softmax_float32, r"case 1/4 \(random logits\).*\n.*values differ"),  # float32
    (max_minus_min, r"case 1/4 \(random logits\).*\n.*values differ"),
    (second_distinct_value, r"case 2/4 \(a tie at the top \(margin 0\) and a certain token"),
    (ascending_sort, r"case 1/4 \(random logits\).*\n.*values differ"),
    (float32_softmax_cast, r"case 1/4 \(random logits\).*\n.*values differ"),
]


@pytest.mark.parametrize("mistake, match", MARGIN_MISTAKES, ids=ids(MARGIN_MISTAKES))
def test_margin_mistake_fails(mistake, match):
    assert_fails(lesson2.check_margin_confidence, mistake, "2.4", match)


def test_float32_margin_fails():
    def float32_margin(logits):  # forgets .double()
        top2 = logits.softmax(dim=-1).topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]

    assert float32_margin(torch.zeros(1, 1, 3)).dtype == torch.float32
    assert_fails(lesson2.check_margin_confidence, float32_margin, "2.4", r"case \d+/\d+ \(")


def test_unstable_softmax_float64_fails():
    def unstable_softmax_float64(logits):  # no max subtraction
        e = logits.double().exp()
        top2 = (e / e.sum(dim=-1, keepdim=True)).topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]

    # The mistake is real: a logit of 800 (a sharper model, or logits / T at a low T) gives nan.
    assert unstable_softmax_float64(torch.tensor([[[800.0, 0.0]]])).isnan().all()
    assert_fails(
        lesson2.check_margin_confidence, unstable_softmax_float64, "2.4", r"case \d+/\d+ \("
    )


# --- Exercise 2.5: the block length experiment ---------------------------------------------------


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
    assert out.startswith("Exercise 2.5 passed: known words / character entropy ")
    assert "From blocks of 8 to 64, the known-word fraction " in out


def test_the_experiment_stub_is_not_attempted(capsys, experiment):
    def stub(block_lengths):
        raise NotImplementedError("Exercise 2.5: measure the quality at each block length")

    prompts, vocab = experiment
    check = lesson2.check_block_length_experiment
    assert not check(stub, CHAR_MODEL, CHAR_TOKENIZER, prompts, vocab)
    assert "Exercise 2.5 not attempted yet" in capsys.readouterr().out


@pytest.mark.parametrize("mistake", [dict(with_prompt=True), dict(per_row=True), dict(steps=16)],
                         ids=["scores_the_prompt_too", "averages_per_row", "other_steps"])
def test_the_experiment_refuses_other_measurements(experiment, mistake):
    with pytest.raises(ExerciseFailed, match=r"^Exercise 2.5: block length \d+: expected known "
                       r"words .* Generate 64 characters after every prompt in 8 steps"):
        run(experiment, **mistake)


def test_the_experiment_wants_every_block_length(experiment):
    prompts, vocab = experiment
    with pytest.raises(ExerciseFailed, match=r"expected a dict with the keys \[8, 16, 32, 64\]"):
        lesson2.check_block_length_experiment(
            lambda blocks: {8: (0.5, 3.0)}, CHAR_MODEL, CHAR_TOKENIZER, prompts, vocab
        )
