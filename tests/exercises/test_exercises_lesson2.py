"""Lesson 2's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import math

import pytest
import torch
from checker_cases import assert_fails, ids, solution_and_stub_tests

from minillada.exercises import lesson2

# --- the solutions, as in notebooks/solutions/02_sampling.ipynb ----------------------------------


def transfer_schedule(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    base = num_masked[:, None] // steps  # (B, 1)
    remainder = num_masked[:, None] % steps
    return base + (torch.arange(steps)[None, :] < remainder).long()  # (B, steps)


def gumbel_max(logits: torch.Tensor, temperature: float, u: torch.Tensor) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(dim=-1)
    g = -torch.log(-torch.log(u.double()))
    return (logits.double() / temperature + g).argmax(dim=-1)


def low_confidence_reveal(x: torch.Tensor, logits: torch.Tensor, k, mask_id: int) -> torch.Tensor:
    x0 = logits.argmax(dim=-1)  # (B, L)
    p = logits.double().softmax(dim=-1).gather(-1, x0[..., None])[..., 0]  # (B, L)
    p = torch.where(x == mask_id, p, -math.inf)
    k = torch.as_tensor(k).expand(x.shape[0])
    out = x.clone()
    for b in range(x.shape[0]):
        chosen = p[b].topk(int(k[b])).indices
        out[b, chosen] = x0[b, chosen]
    return out


def margin(logits: torch.Tensor) -> torch.Tensor:
    top2 = logits.double().softmax(dim=-1).topk(2, dim=-1).values  # (B, W, 2)
    return top2[..., 0] - top2[..., 1]


# --- the stubs, as in notebooks/02_sampling.ipynb ------------------------------------------------


def transfer_schedule_stub(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    raise NotImplementedError(
        "Exercise 2.1: split num_masked over steps, remainder on the first steps"
    )


def gumbel_max_stub(logits: torch.Tensor, temperature: float, u: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError(
        "Exercise 2.2: argmax(logits / T - log(-log u)) in float64; argmax at T = 0"
    )


def low_confidence_reveal_stub(
    x: torch.Tensor, logits: torch.Tensor, k, mask_id: int
) -> torch.Tensor:
    raise NotImplementedError(
        "Exercise 2.3: commit the k most probable argmax proposals at masked positions"
    )


def margin_stub(logits: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError("Exercise 2.4: top-1 minus top-2 probability, in float64")


EXERCISES = [
    ("2.1", lesson2.check_transfer_schedule, transfer_schedule, transfer_schedule_stub),
    ("2.2", lesson2.check_gumbel_max, gumbel_max, gumbel_max_stub),
    ("2.3", lesson2.check_low_confidence_step, low_confidence_reveal, low_confidence_reveal_stub),
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


# --- Exercise 2.2: gumbel_max --------------------------------------------------------------------


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
    assert_fails(lesson2.check_gumbel_max, mistake, "2.2", match)


# --- Exercise 2.3: low_confidence_reveal ----------------------------------------------------------


def commit_top_k(x, x0, confidence, k, largest=True):
    k = torch.as_tensor(k).expand(x.shape[0])
    out = x.clone()
    for b in range(x.shape[0]):
        chosen = confidence[b].topk(int(k[b]), largest=largest).indices
        out[b, chosen] = x0[b, chosen]
    return out


def argmax_probability(logits):
    x0 = logits.argmax(dim=-1)
    return x0, logits.double().softmax(dim=-1).gather(-1, x0[..., None])[..., 0]


def includes_revealed(x, logits, k, mask_id):  # forgets to exclude already revealed positions
    x0, p = argmax_probability(logits)
    return commit_top_k(x, x0, p, k)


def lowest_confidence_first(x, logits, k, mask_id):  # "low confidence" read as "least confident"
    x0, p = argmax_probability(logits)
    return commit_top_k(x, x0, torch.where(x == mask_id, p, math.inf), k, largest=False)


def raw_logit_as_confidence(x, logits, k, mask_id):  # max logit, not its softmax probability
    x0 = logits.argmax(dim=-1)
    score = torch.where(x == mask_id, logits.max(dim=-1).values, -math.inf)
    return commit_top_k(x, x0, score, k)


def softmax_over_positions(x, logits, k, mask_id):  # softmax(dim=1): over L instead of V
    x0 = logits.argmax(dim=-1)
    p = logits.double().softmax(dim=1).gather(-1, x0[..., None])[..., 0]
    return commit_top_k(x, x0, torch.where(x == mask_id, p, -math.inf), k)


def top_k_of_the_whole_batch(x, logits, k, mask_id):  # sum(k) best over all rows together
    x0, p = argmax_probability(logits)
    p = torch.where(x == mask_id, p, -math.inf).flatten()
    chosen = p.topk(int(torch.as_tensor(k).expand(x.shape[0]).sum())).indices
    out = x.clone().flatten()
    out[chosen] = x0.flatten()[chosen]
    return out.view_as(x)


LOW_CONFIDENCE_MISTAKES = [
    (includes_revealed, r"case \d/4 \(.*\).*\n.*values differ"),
    (lowest_confidence_first, r"case 1/4 \(k = 1 per row\).*\n.*values differ"),
    (raw_logit_as_confidence, r"case 1/4 \(k = 1 per row\).*\n.*values differ"),
    (softmax_over_positions, r"case 1/4 \(k = 1 per row\).*\n.*values differ"),
    (top_k_of_the_whole_batch, r"case 1/4 \(k = 1 per row\).*\n.*values differ"),
]


@pytest.mark.parametrize(
    "mistake, match", LOW_CONFIDENCE_MISTAKES, ids=ids(LOW_CONFIDENCE_MISTAKES)
)
def test_low_confidence_reveal_mistake_fails(mistake, match):
    assert_fails(lesson2.check_low_confidence_step, mistake, "2.3", match)


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


def ascending_sort(logits):  # sort() is ascending: p[0] - p[1] are the two least likely
    p = logits.double().softmax(dim=-1).sort(dim=-1).values
    return p[..., 0] - p[..., 1]


MARGIN_MISTAKES = [
    (margin_of_logits, r"case 1/4 \(random logits\).*\n.*values differ"),
    (margin_of_log_probs, r"case 1/4 \(random logits\).*\n.*values differ"),
    (unstable_softmax_float32, r"case 3/4 \(large logits \(use a stable softmax\)\).*\n.*values"),
    (max_minus_min, r"case 1/4 \(random logits\).*\n.*values differ"),
    (second_distinct_value, r"case 2/4 \(a tie at the top \(margin 0\) and a certain token"),
    (ascending_sort, r"case 1/4 \(random logits\).*\n.*values differ"),
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
