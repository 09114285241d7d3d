"""The forward (masking) process of a masked diffusion model, as pure functions.

LLaDA (Nie et al. 2025, Eq. 7; ML-GSAI/LLaDA's GUIDELINES.md) corrupts a clean sequence x0 by
drawing one time t ~ U(0, 1) per sequence and masking each token independently with probability
p = (1 - eps) t + eps. eps = 1e-3 keeps p away from 0, where the 1/p loss weight would explode.

Shapes: B = batch size, L = sequence length.
"""

from __future__ import annotations

import torch

EPS = 1e-3  # LLaDA's minimum masking probability


def mask_probability(t: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Linear schedule p(t) = (1 - eps) t + eps: the probability a token is masked at time t."""
    return (1 - eps) * t + eps


def sample_times(
    batch_size: int,
    stratified: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One t in [0, 1) per sequence: (B,).

    stratified=True draws one uniform u and spreads the batch evenly, t_i = (u + i) / B
    (low-discrepancy sampling, VDM App. I.1 / MDLM): the same expectation, lower variance.
    """
    if stratified:
        u = torch.rand((), generator=generator)
        t = (u + torch.arange(batch_size)) / batch_size
    else:
        t = torch.rand(batch_size, generator=generator)
    return t.to(device)


def apply_mask(
    x0: torch.Tensor, t: torch.Tensor, u: torch.Tensor, mask_id: int, eps: float = EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask position (b, i) when u[b, i] < p(t[b]), deterministically: the noise ``u`` is an input.

    x0: (B, L) token ids; t: (B,); u: (B, L) uniform noise.
    Returns (x_t, masked) with masked a bool (B, L).
    """
    p = mask_probability(t, eps)[:, None]  # (B, 1)
    masked = u < p  # (B, L)
    xt = torch.where(masked, torch.full_like(x0, mask_id), x0)
    return xt, masked


def forward_process(
    x0: torch.Tensor,
    mask_id: int,
    t: torch.Tensor | None = None,
    stratified: bool = False,
    eps: float = EPS,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Corrupt a batch: (x_t, masked, p_mask), with p_mask (B,) the masking probability per row."""
    B, L = x0.shape
    if t is None:
        t = sample_times(B, stratified=stratified, generator=generator)
    t = t.to(x0.device)
    u = torch.rand((B, L), generator=generator).to(x0.device)
    xt, masked = apply_mask(x0, t, u, mask_id, eps)
    return xt, masked, mask_probability(t, eps)
