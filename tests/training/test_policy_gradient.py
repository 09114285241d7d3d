"""GRPO's pieces as d1 codes them: group advantages, the clipped token loss, k3 KL, wd1's loss."""

import math

import pytest
import torch

from minillada.training.policy_gradient import (
    clipped_policy_loss,
    group_advantages,
    k3_kl,
    weighted_likelihood_loss,
)


def test_advantages_are_rewards_minus_the_group_mean_and_flat_groups_are_counted():
    adv = group_advantages([1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 0], group_size=3)
    assert adv.groups == 4 and adv.zero_variance_groups == 2  # (1,1,1) and (0,0,0)
    g = adv.values.view(4, 3)
    assert torch.allclose(g.sum(1), torch.zeros(4), atol=1e-7)
    assert torch.allclose(g[0], torch.tensor([2 / 3, -1 / 3, -1 / 3]))
    assert torch.equal(g[1], torch.zeros(3)) and torch.equal(g[2], torch.zeros(3))
    scaled = group_advantages([1.0, 0.0, 0.5, 0.5], group_size=2, scale="std")
    # group (1, 0): centred +-0.5, unbiased std sqrt(0.5); group (0.5, 0.5): flat, left at 0
    half = 0.5 / math.sqrt(0.5)
    assert torch.allclose(scaled.values, torch.tensor([half, -half, 0.0, 0.0]))


@pytest.mark.parametrize(
    "rewards, group_size, match",
    [
        ([1.0, 0.0], 1, "group_size must be at least 2"),
        ([1.0, 0.0, 1.0], 2, "do not split into groups of 2"),
        ([1.0, float("nan")], 2, "rewards must be finite"),
        ([float("inf"), 0.0], 2, "rewards must be finite"),
    ],
)
def test_bad_groups_and_rewards_are_errors(rewards, group_size, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(rewards, group_size)


def test_at_ratio_one_the_loss_is_reinforce_with_a_group_baseline():
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(4, 5, generator=g, dtype=torch.float64)).requires_grad_()
    adv = torch.tensor([1.0, -0.5, 0.0, 2.0], dtype=torch.float64)
    keep = torch.ones(4, 5, dtype=torch.bool)
    keep[1, 3:] = False  # completion 1 has 3 tokens
    loss, stats = clipped_policy_loss(logp, logp.detach(), adv, keep, clip_eps=0.2)
    assert loss.item() == pytest.approx(-(adv[:, None] * keep).sum().item() / 18)
    loss.backward()
    assert torch.allclose(logp.grad, -(adv[:, None] * keep) / 18)  # d/dlogp: -A / tokens
    assert stats.clip_fraction == 0 and stats.ratio_mean == pytest.approx(1) and stats.kl == 0


def test_the_clip_stops_the_gradient_only_where_the_ratio_went_far_in_the_advantages_direction():
    old = torch.zeros(2, 2, dtype=torch.float64)
    # row 0 (A > 0): ratios 1.5 (clipped, no gradient) and 0.5 (kept); row 1 (A < 0): the mirror
    logp = torch.log(torch.tensor([[1.5, 0.5], [0.5, 1.5]], dtype=torch.float64)).requires_grad_()
    loss, stats = clipped_policy_loss(logp, old, torch.tensor([1.0, -1.0]), clip_eps=0.2)
    loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[1, 0] == 0  # beyond the clip in A's direction
    assert logp.grad[0, 1] != 0 and logp.grad[1, 1] != 0  # the pessimistic side keeps its gradient
    assert stats.clip_fraction == pytest.approx(1.0)  # every ratio lies outside [0.8, 1.2]


def test_k3_is_an_unbiased_nonnegative_kl_estimate():
    g = torch.Generator().manual_seed(1)
    pi = torch.randn(50, generator=g, dtype=torch.float64).log_softmax(0)
    ref = torch.randn(50, generator=g, dtype=torch.float64).log_softmax(0)
    per_token = k3_kl(pi, ref)
    assert (per_token >= 0).all()
    kl = (pi.exp() * (pi - ref)).sum()
    assert (pi.exp() * per_token).sum().item() == pytest.approx(kl.item(), rel=1e-12)  # E_pi k3
    assert torch.equal(k3_kl(pi, pi), torch.zeros_like(pi))


def test_the_kl_term_pulls_towards_the_reference_and_beta_needs_one():
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.5, -1.5]], dtype=torch.float64)
    loss, stats = clipped_policy_loss(logp, logp.detach(), torch.zeros(1), ref_logp=ref, beta=0.1)
    loss.backward()  # with A = 0 only the KL acts: d/dlogp of beta k3 = beta (1 - exp(ref - logp))
    assert torch.allclose(logp.grad, 0.1 * (1 - torch.exp(ref - logp.detach())) / 2)
    assert stats.kl > 0
    with pytest.raises(ValueError, match="beta > 0 needs ref_logp"):
        clipped_policy_loss(logp, logp.detach(), torch.zeros(1), beta=0.1)


def test_wd1_raises_the_better_completions_and_is_zero_when_a_group_ties():
    logp = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 0.0, 0.0], dtype=torch.float64)
    weighted_likelihood_loss(logp, adv, group_size=2).backward()
    assert logp.grad[0] < 0 < logp.grad[1]  # gradient descent raises completion 0, lowers 1
    assert torch.equal(logp.grad[2:], torch.zeros(2))  # a tied group: softmax(A) = softmax(-A)
