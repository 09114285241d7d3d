"""Lesson 0's checker: the solution passes, the stub is 'not attempted', common mistakes fail."""

import pytest
from checker_cases import assert_fails, ids, solution_and_stub_tests

from minillada.exercises import lesson0

# --- the solution, as in notebooks/solutions/00_setup.ipynb ------------------------------------


def count_masks(x, mask_id):
    return (x == mask_id).sum(dim=1)


# --- the stub, as in notebooks/00_setup.ipynb ----------------------------------------------------


def count_masks_stub(x, mask_id):
    raise NotImplementedError(
        "Exercise 0.1: return, for each row of x, the number of entries equal to mask_id"
    )


EXERCISES = [("0.1", lesson0.check_count_masks, count_masks, count_masks_stub)]
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
