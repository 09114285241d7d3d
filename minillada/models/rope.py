"""Rotary position embeddings (RoPE, Su et al. 2021) in the rotate-half layout LLaDA uses.

A bidirectional model has no causal mask to tell it where a token sits, so it needs a positional
signal; RoPE rotates each query/key pair of features by an angle proportional to the position, which
makes attention scores depend on relative offsets. Tables are computed in float32, as LLaDA does.

Shapes: T = sequence length, Dh = head dimension (even).
"""

from __future__ import annotations

import torch


def rope_tables(
    seq_len: int, head_dim: int, theta: float = 10_000.0, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (T, Dh), float32.

    angle[pos, j] = pos / theta^(2(j mod Dh/2) / Dh).
    """
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


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """RoPE runs in float32 at least, as LLaDA does (bf16 and fp16 are upcast), and in float64 for
    a float64 model (so float64 checks stay float64 end to end)."""
    return torch.promote_types(x.dtype, torch.float32)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys (..., T, Dh) by position; computed in float32 (float64 for a float64
    x), returned in x's dtype."""
    xf = x.to(compute_dtype(x))
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


# The fast path. Rotate-half pairs feature j with j + Dh/2. Reorder the features so that each pair
# sits side by side, (0, Dh/2, 1, Dh/2 + 1, ...), and the rotation of a pair by angle a is the
# complex product (x_j + i x_{j+Dh/2}) * e^{ia}: one fused kernel forward and one backward, instead
# of the five element-wise passes above. Attention only ever uses q . k, a sum over all features, so
# reordering the features of q and k the same way leaves every score unchanged; a model reorders the
# rows of its query/key projection (a gather over the weight, far cheaper than over activations).


def interleaved_order(head_dim: int) -> torch.Tensor:
    """Feature order (0, Dh/2, 1, Dh/2 + 1, ...) that puts each rotate-half pair side by side."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}.")
    first = torch.arange(head_dim // 2)
    return torch.stack([first, first + head_dim // 2], dim=-1).reshape(-1)  # (Dh,)


def apply_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE for features laid out in ``interleaved_order``, with the same rotate-half tables as
    ``apply_rope``: the result equals ``apply_rope`` applied before reordering. x (..., Dh);
    cos and sin broadcastable to x, e.g. (T, Dh) for x (B, H, T, Dh). Computed as apply_rope,
    returned in x's dtype."""
    half = cos.shape[-1] // 2
    xf = x.to(compute_dtype(x))
    if xf.stride(-1) != 1 or xf.storage_offset() % 2 or any(s % 2 for s in xf.stride()[:-1]):
        # view_as_complex needs (real, imag) pairs adjacent and aligned: read a fresh copy
        xf = xf.clone(memory_format=torch.contiguous_format)
    rotation = torch.complex(cos[..., :half], sin[..., :half])  # (..., Dh/2): e^{i angle}
    pairs = torch.view_as_complex(xf.unflatten(-1, (half, 2)))  # (..., Dh/2), no copy
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)  # (..., Dh)
