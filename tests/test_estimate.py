"""minillada.estimate: one result type and one standard-error rule for every estimator."""

import math

import pytest
import torch

from minillada.estimate import Estimate, standard_error


def test_the_standard_error_rule():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    assert standard_error(values) == pytest.approx(values.std().item() / 2)  # ddof 1, / sqrt(n)
    assert math.isnan(standard_error([5.0]))  # one random draw says nothing about its spread
    assert standard_error([5.0], exact=True) == 0.0  # a deterministic quantity


def test_estimate_of_values_and_its_printout():
    bound = Estimate.of([2.0, 2.2], detail="2 sequences x 4 samples")
    assert bound.nats == pytest.approx(2.1) and bound.n == 2 and bound.relation == "<="
    assert bound.bits == pytest.approx(2.1 / math.log(2)) and bound.log_likelihood == -bound.nats
    assert str(bound) == (
        f"<= 2.100 ± {bound.stderr:.3f} nats/token = {bound.bits:.3f} bits/token "
        "(2 sequences x 4 samples)"
    )
    exact = Estimate.of(
        [0.5], exact=True, relation="=", per_token=False, quantity="-log p(answer | prompt)"
    )
    assert str(exact) == "-log p(answer | prompt) = 0.500 ± 0.000 nats"
