"""Lesson 0's checkers: the solutions pass, the stubs are 'not attempted', common mistakes fail."""

import pytest
import torch
from checker_cases import assert_fails, ids, solution_and_stub_tests

from minillada.exercises import lesson0

# --- the solution, as in notebooks/solutions/00_setup.ipynb ------------------------------------


def count_masks(x, mask_id):
    return (x == mask_id).sum(dim=1)


def left_pad(sequences, pad_id):
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id)
    mask = torch.zeros(len(sequences), longest, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, longest - len(seq) :] = torch.tensor(seq)
            mask[row, longest - len(seq) :] = 1
    return ids, mask


def mask_fraction_spread(lengths):
    g = torch.Generator().manual_seed(0)
    spread = {}
    for L in lengths:
        masked = torch.rand(1000, L, generator=g) < 0.5  # (rows, L)
        spread[L] = masked.double().mean(dim=1).std().item()
    return spread


# --- the stub, as in notebooks/00_setup.ipynb ----------------------------------------------------


def count_masks_stub(x, mask_id):
    raise NotImplementedError("Exercise 0.1: count the masks in each row")


def left_pad_stub(sequences, pad_id):
    raise NotImplementedError("Exercise 0.2: left-pad the prompts into one batch")


def mask_fraction_spread_stub(lengths):
    raise NotImplementedError("Exercise 0.3: measure the spread of the masked fraction")


EXERCISES = [
    ("0.1", lesson0.check_count_masks, count_masks, count_masks_stub),
    ("0.2", lesson0.check_left_pad, left_pad, left_pad_stub),
    (
        "0.3",
        lesson0.check_mask_fraction_experiment,
        mask_fraction_spread,
        mask_fraction_spread_stub,
    ),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- typical mistakes ----------------------------------------------------------------------------


def counts_per_column(x, mask_id):  # sums over the wrong dimension: (L,) instead of (B,)
    return (x == mask_id).sum(dim=0)


def counts_the_whole_batch(x, mask_id):  # forgets dim=: one number for the whole batch
    return (x == mask_id).sum()


def fraction_not_count(x, mask_id):  # the fraction of masked positions, not their number
    return (x == mask_id).float().mean(dim=1)


def counts_the_other_tokens(x, mask_id):  # != instead of ==
    return (x != mask_id).sum(dim=1)


MISTAKES = [
    (counts_per_column, r"case 1/3 \(a random batch with mask id 4\).*\n.*expected shape \(4,\)"),
    (counts_the_whole_batch, r"case 1/3 \(a random batch with mask id 4\).*\n.*expected shape"),
    (fraction_not_count, r"case 1/3 \(a random batch with mask id 4\).*\n.*values differ"),
    (counts_the_other_tokens, r"case 1/3 \(a random batch with mask id 4\)"),
]


@pytest.mark.parametrize("mistake, match", MISTAKES, ids=ids(MISTAKES))
def test_mistake_fails(mistake, match):
    assert "expected" in assert_fails(lesson0.check_count_masks, mistake, "0.1", match)


# --- Exercise 0.2: left_pad ----------------------------------------------------------------------


def pads_on_the_right(sequences, pad_id):  # the usual padding of a classifier, not of a sampler
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id)
    mask = torch.zeros(len(sequences), longest, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def mask_from_the_pad_id(sequences, pad_id):  # a prompt token equal to pad_id counts as padding
    ids, _ = left_pad(sequences, pad_id)
    return ids, (ids != pad_id).long()


def forgets_the_mask(sequences, pad_id):
    return left_pad(sequences, pad_id)[0]


PAD_MISTAKES = [
    (pads_on_the_right, r"case 1/5 \(three prompts.*\n.*ids: expected.*\n(.*\n)*.*left"),
    (mask_from_the_pad_id, r"case 3/5 \(the pad id is also a token.*\n.*attention_mask: expected"),
    (forgets_the_mask, r"case 1/5 .*\n.*expected a pair"),
]


@pytest.mark.parametrize("mistake, match", PAD_MISTAKES, ids=ids(PAD_MISTAKES))
def test_left_pad_mistake_fails(mistake, match):
    assert_fails(lesson0.check_left_pad, mistake, "0.2", match)


# --- Exercise 0.3: the masked fraction's spread --------------------------------------------------


def spread_of_counts(lengths):  # the number of masks, not the fraction: L times too large
    return {L: v * L for L, v in mask_fraction_spread(lengths).items()}


def variance_not_spread(lengths):
    return {L: v**2 for L, v in mask_fraction_spread(lengths).items()}


def spread_over_positions(lengths):  # std across the positions of one row: a Bernoulli's, 0.5
    g = torch.Generator().manual_seed(0)
    return {L: (torch.rand(1, L, generator=g) < 0.5).double().std().item() for L in lengths}


@pytest.mark.parametrize(
    "mistake",
    [spread_of_counts, variance_not_spread, spread_over_positions],
    ids=lambda f: f.__name__,
)
def test_mask_fraction_mistake_fails(mistake):
    message = assert_fails(
        lesson0.check_mask_fraction_experiment, mistake, "0.3", r"length \d+: expected"
    )
    assert "fraction" in message


def the_formula_not_a_measurement(lengths):  # sqrt(p (1 - p) / L) typed in, nothing drawn
    return {L: (0.25 / L) ** 0.5 for L in lengths}


def test_the_formula_is_not_a_measurement():
    message = assert_fails(
        lesson0.check_mask_fraction_experiment, the_formula_not_a_measurement, "0.3",
        "expected a measurement, got the exact values to nine digits",
    )  # fmt: skip
    assert "sqrt" not in message  # the failure does not hand out the formula either


def test_mask_fraction_wrong_keys_fail():
    assert_fails(
        lesson0.check_mask_fraction_experiment, lambda lengths: {16: 0.1}, "0.3", r"expected a dict"
    )


def test_mask_fraction_pass_line_measures_and_does_not_conclude(capsys):
    assert lesson0.check_mask_fraction_experiment(mask_fraction_spread)
    out = capsys.readouterr().out
    assert "0.1" in out and "(L = 4096)" in out  # the measurements
    assert "sqrt" not in out and "shrinks" not in out  # the discussion cell interprets them
