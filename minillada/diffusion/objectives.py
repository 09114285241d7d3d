"""Training objectives. Lesson 1: LLaDA's pre-training loss, the 1/p-weighted masked cross-entropy.

Shapes: B = batch size, L = sequence length, V = vocabulary size (mask token included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minillada.diffusion.masking import EPS, forward_process
from minillada.runtime import upcast


def masked_diffusion_loss(
    logits: torch.Tensor, x0: torch.Tensor, masked: torch.Tensor, p_mask: torch.Tensor
) -> torch.Tensor:
    """LLaDA's loss: sum over masked (b, i) of CE / p_b, divided by B * L.

    The pre-training loss of the LLaDA paper (Eq. 3) as ML-GSAI/LLaDA's GUIDELINES.md computes it.

    Dividing by every token slot, not by the number of masked tokens, makes it a Monte Carlo
    estimate of the negative ELBO per token, an upper bound on the negative log-likelihood in nats
    per token. logits: (B, L, V); x0: (B, L); masked: bool (B, L); p_mask: (B,).
    """
    B, L = x0.shape
    logits = upcast(logits)  # bf16 -> fp32; a float64 model stays float64
    ce = F.cross_entropy(logits[masked], x0[masked], reduction="none")  # (num_masked,)
    weight = 1.0 / p_mask.to(logits.dtype)[:, None].expand(B, L)[masked]  # (num_masked,)
    return (ce * weight).sum() / (B * L)


def diffusion_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    mask_id: int,
    stratified: bool = True,
    eps: float = EPS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Corrupt ``x0`` (B, L), predict it back with ``model`` (ids -> logits): the weighted loss."""
    xt, masked, p_mask = forward_process(
        x0, mask_id, stratified=stratified, eps=eps, generator=generator
    )
    logits = model(xt)  # (B, L, V)
    return masked_diffusion_loss(logits, x0, masked, p_mask)
