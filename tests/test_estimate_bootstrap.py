"""The paired bootstrap of seed-averaged accuracy: the point difference, a clear gap and no gap,
the same answer however the draws are batched, and bad input."""

import pytest

from minillada.estimate import paired_bootstrap


def test_difference_is_the_gap_in_seed_averaged_accuracy():
    a = [[1, 1, 0, 1], [1, 0, 0, 1]]  # 3/4 and 2/4: mean 0.625
    b = [[1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 1, 0]]  # 1/4, 1/4, 2/4: mean 1/3
    r = paired_bootstrap(a, b, draws=500)
    assert (r.n, r.runs_a, r.runs_b, r.draws) == (4, 2, 3, 500)
    assert r.difference == pytest.approx(0.625 - 1 / 3, abs=1e-12)
    lo, hi = r.interval95
    assert lo <= r.difference <= hi


def test_a_large_gap_is_significant_and_none_is_not():
    better = [[True] * 30 + [False] * 70] * 3
    worse = [[False] * 30 + [False] * 70] * 3
    r = paired_bootstrap(better, worse, draws=2000)
    # every resample of 100 items with 30% right-only-in-A items is positive unless it draws none
    assert r.p_a_not_better == pytest.approx(1 / 2001) and r.interval95[0] > 0.15
    same = paired_bootstrap(worse, worse, draws=2000)
    assert same.difference == 0 and same.p_a_not_better == 1.0 and same.interval95 == (0.0, 0.0)
    flipped = paired_bootstrap(worse, better, draws=2000)
    assert flipped.p_a_not_better == 1.0 and flipped.interval95[1] < -0.15


def test_seeded_and_draws_not_a_multiple_of_the_batch():
    a = [[i % 3 == 0 for i in range(50)], [i % 4 == 0 for i in range(50)]]
    b = [[i % 5 == 0 for i in range(50)]]
    r1, r2 = paired_bootstrap(a, b, draws=2500, seed=3), paired_bootstrap(a, b, draws=2500, seed=3)
    assert r1 == r2 and r1.draws == 2500


def test_p_value_matches_the_exact_resampling_distribution():
    # two items, A right only on the first, B only on the second: of the 4 equally likely
    # resamples, (1, 1) has a positive gap and the other 3 do not, so p -> 3/4
    r = paired_bootstrap([[1, 0]], [[0, 1]], draws=20_000)
    assert r.p_a_not_better == pytest.approx(0.75, abs=0.015)  # 5 binomial s.e. (0.003 each)
    assert r.interval95 == (-1.0, 1.0) and r.difference == 0  # resampled gaps: -1, 0, 1


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one run per setting"):
        paired_bootstrap([], [[1]])
    with pytest.raises(ValueError, match="same items in the same order: got runs of \\[2, 3\\]"):
        paired_bootstrap([[1, 0]], [[1, 0, 1]])
    with pytest.raises(ValueError, match="draws must be at least 1"):
        paired_bootstrap([[1]], [[0]], draws=0)
