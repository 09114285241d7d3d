"""Scaled dot-product attention, once for both of minillada's models: written out (the readable
path), or as PyTorch's fused ``scaled_dot_product_attention`` (the fast path), with an optional
causal mask (lesson 3's autoregressive twin) and an optional padding bias (batched prompts).

A masked diffusion model attends in both directions: every position sees every other one, so no
mask is needed unless a batch is padded. Padding is given as a keep-mask (1 = token, 0 = padding)
and becomes an additive bias on the scores of padded keys (``attention_bias``).

Shapes: B = batch, H = heads, L = sequence length, Dh = head dimension.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minillada.runtime import upcast


def attention_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, L) keep-mask (1 = real token, 0 = padding) -> additive bias (B, 1, 1, L), or None.

    As in the Oct-2025 release of LLaDA's modeling_llada.py: padded keys get the most negative
    float32 number, cast to the activation dtype (where it would overflow to -inf, the dtype's most
    negative finite number). A mask of all ones gives None, so an unpadded batch runs exactly the
    mask-free computation.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keep = attention_mask.to(torch.float32)[:, None, None, :]  # (B, 1, 1, L)
    bias = (1.0 - keep) * torch.finfo(torch.float32).min
    return bias.to(dtype).clamp_min(torch.finfo(dtype).min)


def row_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) keep-mask of left-padded rows -> (B, L) long positions counted from each row's first
    real token (padding gets 0): each row's tokens then sit where they sit alone."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp_min(0)


def causal_bias(length: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """(L, L) additive bias that hides the future: -inf above the diagonal, 0 elsewhere."""
    future = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    return torch.zeros(length, length, dtype=dtype, device=device).masked_fill(future, -math.inf)


def attention_readable(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(Dh) + bias) V, written out. q (B, H, L, Dh), k and v (B, H, L, Dh)
    (grouped-query heads already repeated); bias broadcastable to (B, H, L, L); causal hides the
    future. The softmax runs in float32 (float64 for float64 inputs) and is cast back, as the
    released LLaDA model does."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, L, L)
    if causal:
        scores = scores + causal_bias(q.size(-2), scores.dtype, scores.device)
    if bias is not None:
        scores = scores + bias  # padded keys get a huge negative score
    weights = upcast(scores).softmax(dim=-1).to(v.dtype)  # (B, H, L, L), rows sum to 1
    return weights @ v  # (B, H, L, Dh)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    causal: bool = False,
    fast: bool = True,
) -> torch.Tensor:
    """``attention_readable`` (fast=False) or the same function through PyTorch's fused
    ``F.scaled_dot_product_attention`` (fast=True). (B, H, L, Dh) -> (B, H, L, Dh)."""
    if not fast:
        return attention_readable(q, k, v, bias, causal)
    if bias is not None and causal:  # SDPA takes either a mask or is_causal, not both
        bias = bias + causal_bias(q.size(-2), bias.dtype, bias.device)
        causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=0.0, is_causal=causal)
