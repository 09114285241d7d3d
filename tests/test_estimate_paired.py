"""McNemar's exact test: hand-computed tails, symmetry, and bad input."""

import math

import pytest

from minillada.estimate import paired_comparison


def test_counts_and_hand_computed_p_values():
    a = [1, 1, 1, 0, 0, 1, 1, 0, 1, 1]
    b = [1, 0, 0, 0, 1, 0, 1, 0, 0, 1]
    c = paired_comparison(a, b)
    assert (c.n, c.right_a, c.right_b, c.only_a, c.only_b) == (10, 7, 4, 4, 1)
    # 5 discordant items, B right alone on 1: P(X <= 1) = (1 + 5) / 32
    assert c.p_b_worse == pytest.approx(6 / 32, abs=0)
    assert c.p_two_sided == pytest.approx(12 / 32, abs=0)
    assert c.difference == pytest.approx(-0.3)
    assert "McNemar exact p = 0.375" in c.line()


def test_symmetric_and_no_discordance():
    a, b = [1, 0, 1, 1, 0, 0, 1], [0, 1, 1, 0, 0, 1, 1]
    assert paired_comparison(a, b).p_two_sided == paired_comparison(b, a).p_two_sided
    same = paired_comparison([1, 0, 1], [1, 0, 1])
    assert same.p_two_sided == 1.0 and same.p_b_worse == 1.0


def test_a_large_one_sided_split_is_significant():
    a = [True] * 20 + [False] * 80
    b = [False] * 20 + [False] * 80
    c = paired_comparison(a, b)
    assert c.p_b_worse == pytest.approx(1 / 2**20) and c.p_b_worse < 0.05
    assert c.p_two_sided == pytest.approx(2 / 2**20)
    assert math.isclose(c.difference, -0.2)


def test_unpaired_input_is_refused():
    with pytest.raises(ValueError, match="same items under both settings: got 2 and 3"):
        paired_comparison([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="at least one"):
        paired_comparison([], [])
