"""The losses of group policy-gradient RL for a masked diffusion LM (lesson 9): pure functions.

GRPO (Shao et al. 2024) as d1's diffu-GRPO codes it (Zhao et al. 2025): sample a group of G
completions per prompt, reward each, and use the reward minus the group's mean as the advantage of
every token of that completion (d1 computes the group's standard deviation but does not divide by
it; ``scale="std"`` does, as GRPO's paper does). The loss over B completions of lengths |o_i|:

    rho_ik = exp(logp_ik - old_ik)
    L = -(1 / sum_i |o_i|) sum_ik [ min(rho_ik A_i, clip(rho_ik, 1 - eps, 1 + eps) A_i)
                                    - beta KL_ik ]
    KL_ik = exp(ref_ik - logp_ik) - (ref_ik - logp_ik) - 1      (Schulman's k3, always >= 0)

where logp, old and ref are per-token log-probabilities of the current, the rollout-time and the
frozen reference policy, all estimated on the same mask draws (``minillada.diffusion.policy``).

wd1 (Tang et al. 2025) removes the ratio: with w+ = softmax(A) and w- = softmax(-A) over a group,
L = -sum_i w+_i logp_i + sum_i w-_i logp_i, sequence log-probabilities logp_i; no old policy.

Shapes: B = groups x G completions (a group's completions are consecutive rows), C completion
positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch


def check_rewards(rewards: Sequence[float]) -> None:
    """Rewards are finite numbers: a NaN would turn every advantage of its group into NaN."""
    bad = [(i, r) for i, r in enumerate(rewards) if not math.isfinite(r)]
    if bad:
        raise ValueError(
            f"rewards must be finite; got {len(bad)} that are not, first (index, value) "
            f"{bad[:3]}. Check the reward function on those completions."
        )


@dataclass(frozen=True)
class Advantages:
    values: torch.Tensor  # (B,) float32: each completion's advantage
    zero_variance_groups: int  # groups whose rewards are all equal: no signal from them
    groups: int


def group_advantages(
    rewards: torch.Tensor | list[float],
    group_size: int,
    scale: Literal["none", "std"] = "none",
) -> Advantages:
    """Advantage = reward - its group's mean (``scale="std"``: divided by the group's standard
    deviation too, where it is not 0). rewards (B,), groups of ``group_size`` consecutive rows."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32).reshape(-1)
    check_rewards(rewards.tolist())
    if group_size < 2:
        raise ValueError(
            f"group_size must be at least 2: the group's mean is the baseline, and a group of "
            f"{group_size} has nothing to compare against (every advantage would be 0)"
        )
    if len(rewards) % group_size:
        raise ValueError(
            f"{len(rewards)} rewards do not split into groups of {group_size}; pass G completions "
            "per prompt, a prompt's completions in consecutive rows"
        )
    if scale not in ("none", "std"):
        raise ValueError(f"scale must be 'none' (d1) or 'std' (GRPO's paper), got {scale!r}")
    grouped = rewards.view(-1, group_size)  # (groups, G)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    spread = grouped.std(dim=1, keepdim=True)  # (groups, 1)
    flat = spread == 0
    if scale == "std":
        centred = torch.where(flat, centred, centred / spread.clamp_min(1e-12))
    return Advantages(centred.reshape(-1), int(flat.sum()), len(grouped))


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimate of KL(pi || ref) per token: exp(r) - r - 1 with r = ref - logp."""
    r = ref_logp - logp
    return torch.exp(r) - r - 1


@dataclass(frozen=True)
class PolicyLossStats:
    clip_fraction: float  # share of tokens whose ratio the clip cut
    kl: float  # mean k3 KL per token to the reference (0 when no reference is given)
    ratio_mean: float


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor | None = None,
    clip_eps: float = 0.2,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, PolicyLossStats]:
    """d1's token-level clipped loss with a k3 KL to the reference (see the module docstring).
    logp (B, C) with the graph; old_logp, ref_logp (B, C) without; advantages (B,);
    completion_mask (B, C) bool, the tokens that count (default all)."""
    if completion_mask is None:
        completion_mask = torch.ones_like(logp, dtype=torch.bool)
    if beta and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp, the reference policy's log-probabilities")
    weight = completion_mask.to(logp.dtype)
    tokens = weight.sum().clamp_min(1)
    ratio = torch.exp(logp - old_logp.detach())  # (B, C)
    a = advantages.to(logp.dtype)[:, None]  # (B, 1): every token of a completion shares it
    unclipped, clipped = ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a
    objective = torch.minimum(unclipped, clipped)  # (B, C)
    kl = torch.zeros_like(logp) if ref_logp is None else k3_kl(logp, ref_logp.detach())
    loss = -((objective - beta * kl) * weight).sum() / tokens
    with torch.no_grad():
        cut = (clipped != unclipped) & completion_mask
        stats = PolicyLossStats(
            clip_fraction=(cut.sum() / tokens).item(),
            kl=((kl * weight).sum() / tokens).item(),
            ratio_mean=((ratio * weight).sum() / tokens).item(),
        )
    return loss, stats


def weighted_likelihood_loss(
    sequence_logp: torch.Tensor, advantages: torch.Tensor, group_size: int
) -> torch.Tensor:
    """wd1's ratio-free loss: per group, raise the log-probability of completions weighted by
    softmax(A) and lower it for those weighted by softmax(-A). sequence_logp (B,) with the graph,
    advantages (B,); the mean over groups."""
    logp = sequence_logp.view(-1, group_size)  # (groups, G)
    a = advantages.to(logp.dtype).view(-1, group_size)
    w_up, w_down = a.softmax(dim=1), (-a).softmax(dim=1)
    return (-(w_up * logp).sum(dim=1) + (w_down * logp).sum(dim=1)).mean()
