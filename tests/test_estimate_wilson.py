"""The Wilson interval of a proportion."""

import math

import pytest

from minillada.estimate import wilson_interval


def test_wilson_interval_by_hand():
    # 8 of 10, z = 1.96: centre (0.8 + 0.19208) / 1.38416,
    # half 1.96 / 1.38416 * sqrt(0.016 + 0.009604)
    lo, hi = wilson_interval(8, 10, z=1.96)
    centre, half = 0.99208 / 1.38416, 1.96 / 1.38416 * math.sqrt(0.025604)
    assert lo == pytest.approx(centre - half, abs=1e-12) and hi == pytest.approx(centre + half)


def test_wilson_interval_edges():
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(0, 50)[1] > 0.05
    assert wilson_interval(50, 50)[1] == 1.0 and wilson_interval(50, 50)[0] < 0.95
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
