"""Rotary position embeddings (RoPE, Su et al. 2021) in the rotate-half layout LLaDA uses.

A bidirectional model has no causal mask to tell it where a token sits, so it needs a positional
signal;
RoPE rotates each query/key pair of features by an angle proportional to the position, which makes
attention scores depend on relative offsets. Tables are computed in float32, as LLaDA does.

Shapes: T = sequence length, Dh = head dimension (even).
"""

from __future__ import annotations

import torch


def rope_tables(
    seq_len: int, head_dim: int, theta: float = 10_000.0, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (T, Dh), float32: angle[pos, j] = pos / theta^(2(j mod Dh/2) /
    Dh)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}.")
    inv_freq = 1.0 / theta ** (
        torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
    )
    positions = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq)  # (T, Dh/2)
    angles = torch.cat([freqs, freqs], dim=-1)  # (T, Dh): rotate-half pairs feature j with j + Dh/2
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys (..., T, Dh) by position; computed in float32, returned in x's
    dtype."""
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)
