"""Lesson 3's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import math

import pytest
import torch
import torch.nn.functional as F
from checker_cases import assert_fails, ids, solution_and_stub_tests

from minillada.exercises import lesson3

# --- the solutions, as in notebooks/solutions/03_likelihood_and_autoregression.ipynb ------------


def spread_mask_counts(answer_len, batch_size, k):
    L, b = answer_len, batch_size
    x = torch.linspace(float(k), k + (b - 1) * (L / b), b, dtype=torch.float64).round().long()
    return ((x - 1) % L) + 1


def l_estimator_terms(logits, answer, masked):
    b, L = masked.shape
    ce = F.cross_entropy(
        logits.float().transpose(1, 2), answer.expand(b, L), reduction="none"
    )  # (b, L)
    return (ce.double() * masked).sum(dim=1) * (L / masked.sum(dim=1).double())


def sequence_log_prob(model, x, bos_id):
    inp = torch.cat([torch.full_like(x[:, :1], bos_id), x[:, :-1]], dim=1)  # (N, L)
    logp = model(inp).double().log_softmax(dim=-1)  # (N, L, V)
    return logp.gather(-1, x[..., None]).squeeze(-1).sum(dim=1)


# --- the stubs, as in notebooks/03_likelihood_and_autoregression.ipynb ---------------------------


def spread_mask_counts_stub(answer_len, batch_size, k):
    raise NotImplementedError(
        "Exercise 3.1: round(linspace(k, k + (b-1) L / b, b)), wrapped into 1..L"
    )


def l_estimator_terms_stub(logits, answer, masked):
    raise NotImplementedError(
        "Exercise 3.3: per row, (L / number masked) * sum over masked positions of cross-entropy"
    )


def sequence_log_prob_stub(model, x, bos_id):
    raise NotImplementedError(
        "Exercise 3.2: feed [BOS, x_1..x_{L-1}], return sum_i log p(x_i | BOS, x_<i) per row, (N,)"
    )


EXERCISES = [
    ("3.1", lesson3.check_spread_mask_counts, spread_mask_counts, spread_mask_counts_stub),
    ("3.2", lesson3.check_sequence_log_prob, sequence_log_prob, sequence_log_prob_stub),
    ("3.3", lesson3.check_l_estimator_terms, l_estimator_terms, l_estimator_terms_stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- Exercise 3.1: spread_mask_counts ------------------------------------------------------------


def points(L, b, k):
    return torch.linspace(float(k), k + (b - 1) * (L / b), b, dtype=torch.float64)


def wraps_with_mod_L(answer_len, batch_size, k):  # x % L gives 0 for x = L, not L
    return points(answer_len, batch_size, k).round().long() % answer_len


def truncates(answer_len, batch_size, k):  # .long() without .round(): 5.5 -> 5
    return ((points(answer_len, batch_size, k).long() - 1) % answer_len) + 1


def endpoint_off_by_one(answer_len, batch_size, k):  # linspace up to k + L instead of k + (b-1)L/b
    L, b = answer_len, batch_size
    x = torch.linspace(float(k), k + L, b, dtype=torch.float64).round().long()
    return ((x - 1) % L) + 1


def no_wrap(answer_len, batch_size, k):  # counts above L
    return points(answer_len, batch_size, k).round().long()


def clamps_instead_of_wrapping(answer_len, batch_size, k):  # piles the overflow on l = L
    return points(answer_len, batch_size, k).round().long().clamp(1, answer_len)


SPREAD_MISTAKES = [
    (wraps_with_mod_L, r"case 2/6 \(L = 8, b = 8, k = 1: one row per count 1\.\.8\).*\n"
     r".*values differ.*\n  expected tensor\(\[1, 2, 3, 4, 5, 6, 7, 8\]\)"),
    (truncates, r"case 1/6 \(L = 5, b = 4, k = 3: wraps past L.*\).*\n.*values differ"),
    (endpoint_off_by_one, r"case 1/6 \(L = 5, b = 4, k = 3: wraps past L.*\).*\n.*values differ"),
    (no_wrap, r"case 1/6 \(L = 5, b = 4, k = 3: wraps past L.*\).*\n.*values differ"),
    (clamps_instead_of_wrapping, r"case 1/6 \(L = 5, b = 4, k = 3.*\).*\n.*values differ"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", SPREAD_MISTAKES, ids=ids(SPREAD_MISTAKES))
def test_spread_mask_counts_mistake_fails(mistake, match):
    assert_fails(lesson3.check_spread_mask_counts, mistake, "3.1", match)


def test_round_half_up_fails():
    def round_half_up(answer_len, batch_size, k):
        L = answer_len
        x = [math.floor(v + 0.5) for v in points(L, batch_size, k).tolist()]
        return torch.tensor([(v - 1) % L + 1 for v in x])

    # The mistake is real: LLaDA (torch.round) rounds 2.5 to 2 and 4.5 to 4.
    assert spread_mask_counts(4, 8, 2).tolist() == [2, 2, 3, 4, 4, 4, 1, 2]
    assert round_half_up(4, 8, 2).tolist() == [2, 3, 3, 4, 4, 1, 1, 2]
    assert_fails(lesson3.check_spread_mask_counts, round_half_up, "3.1", r"case \d+/\d+ \(")


# --- Exercise 3.2: sequence_log_prob -------------------------------------------------------------


def with_bos(x, bos_id):
    return torch.cat([torch.full_like(x[:, :1], bos_id), x[:, :-1]], dim=1)


def score(logits, x):
    return logits.double().log_softmax(dim=-1).gather(-1, x[..., None]).squeeze(-1).sum(dim=1)


def no_shift(model, x, bos_id):  # feeds x itself: position i scores x_i after seeing... x_i
    return score(model(x), x)


def skips_the_first_token(model, x, bos_id):  # no BOS: log p(x_1 | BOS) is missing
    return score(model(x[:, :-1]), x[:, 1:])


def bos_at_the_end(model, x, bos_id):  # shifts the wrong way
    return score(model(torch.cat([x[:, 1:], torch.full_like(x[:, :1], bos_id)], dim=1)), x)


def sums_raw_logits(model, x, bos_id):  # forgets log_softmax
    return model(with_bos(x, bos_id)).double().gather(-1, x[..., None]).squeeze(-1).sum(dim=1)


def mean_not_sum(model, x, bos_id):  # the average per token, not log p(x)
    logp = model(with_bos(x, bos_id)).double().log_softmax(dim=-1)
    return logp.gather(-1, x[..., None]).squeeze(-1).mean(dim=1)


def negative_log_likelihood(model, x, bos_id):  # cross-entropy: the sign is flipped
    return F.cross_entropy(model(with_bos(x, bos_id)).transpose(1, 2), x, reduction="none").sum(1)


def log_softmax_over_positions(model, x, bos_id):  # log_softmax(dim=1): over L instead of V
    logp = model(with_bos(x, bos_id)).double().log_softmax(dim=1)
    return logp.gather(-1, x[..., None]).squeeze(-1).sum(dim=1)


LOG_PROB_MISTAKES = [
    no_shift,
    skips_the_first_token,
    bos_at_the_end,
    sums_raw_logits,
    mean_not_sum,
    negative_log_likelihood,
    log_softmax_over_positions,
]


@pytest.mark.parametrize("mistake", LOG_PROB_MISTAKES, ids=ids(LOG_PROB_MISTAKES))
def test_sequence_log_prob_mistake_fails(mistake):
    assert_fails(
        lesson3.check_sequence_log_prob,
        mistake,
        "3.2",
        r"case 1/3 \(3 sequences of 12 tokens\).*\n.*values differ",
    )


# --- Exercise 3.3: l_estimator_terms -------------------------------------------------------------


def masked_ce(logits, answer, masked):
    b, L = masked.shape
    ce = F.cross_entropy(logits.float().transpose(1, 2), answer.expand(b, L), reduction="none")
    return ce.double() * masked


def forgets_the_weight(logits, answer, masked):  # no L / l: just the masked cross-entropy
    return masked_ce(logits, answer, masked).sum(dim=1)


def mean_over_masked(logits, answer, masked):  # 1 / l without the factor L
    return masked_ce(logits, answer, masked).sum(dim=1) / masked.sum(dim=1)


def inverted_weight(logits, answer, masked):  # l / L instead of L / l
    b, L = masked.shape
    return masked_ce(logits, answer, masked).sum(dim=1) * masked.sum(dim=1) / L


def every_position(logits, answer, masked):  # the cross-entropy of unmasked positions too
    b, L = masked.shape
    ce = masked_ce(logits, answer, torch.ones_like(masked))
    return ce.sum(dim=1) * (L / masked.sum(dim=1).double())


def batch_count(logits, answer, masked):  # l counted over the whole batch, not per row
    b, L = masked.shape
    return masked_ce(logits, answer, masked).sum(dim=1) * (L / masked.sum().double())


def log_likelihood_sign(logits, answer, masked):  # sum of log p: the negative of the bound
    b, L = masked.shape
    return -masked_ce(logits, answer, masked).sum(dim=1) * (L / masked.sum(dim=1).double())


def averages_the_rows(logits, answer, masked):  # returns the mean estimate, not one per row
    return l_estimator_terms(logits, answer, masked).mean()


L_ESTIMATOR_MISTAKES = [
    (forgets_the_weight, r"case 1/3 \(4 rows masking 1, 2, 4 and 6 of 6.*\).*\n.*values differ"),
    (mean_over_masked, r"case 1/3 \(4 rows masking 1, 2, 4 and 6 of 6.*\).*\n.*values differ"),
    (inverted_weight, r"case 1/3 \(4 rows masking 1, 2, 4 and 6 of 6.*\).*\n.*values differ"),
    (every_position, r"case 1/3 \(4 rows masking 1, 2, 4 and 6 of 6.*\).*\n.*values differ"),
    (batch_count, r"case 1/3 \(4 rows masking 1, 2, 4 and 6 of 6.*\).*\n.*values differ"),
    (log_likelihood_sign, r"case 1/3 \(4 rows masking 1, 2, 4 and 6 of 6.*\).*\n.*values differ"),
    (averages_the_rows, r"case 1/3 \(4 rows masking.*\).*\n.*expected shape \(4,\), got \(\)"),
]


@pytest.mark.parametrize("mistake, match", L_ESTIMATOR_MISTAKES, ids=ids(L_ESTIMATOR_MISTAKES))
def test_l_estimator_terms_mistake_fails(mistake, match):
    assert_fails(lesson3.check_l_estimator_terms, mistake, "3.3", match)
