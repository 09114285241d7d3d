"""Lesson 9's rewards: exact match first; partial credit order-aware, below 1, not gameable."""

import pytest

from minillada.evaluation.rewards import PARTIAL_CAP, exact_match, partial_credit

REFERENCE = "night the in sing birds"  # `reverse` of "birds sing in the night"


def test_an_exact_answer_earns_1_and_anything_else_less_than_the_cap():
    assert exact_match(" night the in sing birds ", REFERENCE) == 1.0
    assert partial_credit(REFERENCE, REFERENCE) == 1.0
    near = partial_credit("night the in sing bird", REFERENCE)  # one word wrong
    assert near == pytest.approx(PARTIAL_CAP * 4 / 5) and near < 1.0


def test_copying_the_line_unreversed_earns_only_its_fixed_points():
    # bag-of-words credit would pay 100% here; by position only the middle word agrees
    assert partial_credit("birds sing in the night", REFERENCE) == pytest.approx(PARTIAL_CAP / 5)


@pytest.mark.parametrize(
    "answer, credit",
    [
        ("night the", PARTIAL_CAP * 2 / 5),  # stopping early: divided by the longer (reference)
        ("night the in sing birds birds sing", PARTIAL_CAP * 5 / 7),  # running on: by the answer
        ("", 0.0),
    ],
)
def test_stopping_early_or_running_on_is_not_paid_in_full(answer, credit):
    assert partial_credit(answer, REFERENCE) == pytest.approx(credit)
