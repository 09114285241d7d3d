"""Lesson 1's network: a small pre-norm transformer with RoPE and no causal mask.

It maps token ids (the mask token included) to logits over the vocabulary at every position. It
takes no time input: the fraction of mask tokens in the input already tells it how noisy the
sequence is (RADD; LLaDA FAQ). ``causal=True`` turns the same network into a GPT, which lesson 3
uses as the autoregressive twin.

Shapes: B = batch, T = sequence length, D = model width, H = heads, Dh = D / H, V = vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minillada.models.attention import attention, attention_bias
from minillada.models.rope import apply_rope, apply_rope_interleaved, interleaved_order, rope_tables


@dataclass
class TinyTransformerConfig:
    vocab_size: int = 66  # characters + the mask token
    block_size: int = 128  # context length: the longest sequence the model accepts
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128  # D
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * D
    rope_theta: float = 10_000.0
    causal: bool = False  # False: bidirectional (diffusion); True: GPT-style next-token model
    # F.scaled_dot_product_attention; False spells softmax(QK^T)V out (minillada.models.attention)
    fast_attention: bool = True
    # RoPE as one complex multiply on reordered features (minillada.models.rope); False: rotate-half
    # written out. Same function of the same weights either way.
    fast_rope: bool = True
    # "rope" (as LLaDA) or "learned": GPT-2's absolute position embeddings, kept to measure what
    # RoPE buys a bidirectional model (bench/lesson1_quality.md)
    positions: str = "rope"

    def __post_init__(self) -> None:
        if self.positions not in ("rope", "learned"):
            raise ValueError(f"positions must be 'rope' or 'learned', got {self.positions!r}.")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}.")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError("RoPE needs an even head dimension n_embd // n_head.")

    @property
    def context_length(self) -> int:
        """The longest sequence the model accepts (= block_size); samplers check it."""
        return self.block_size


def interleaved_qkv_rows(cfg: TinyTransformerConfig) -> torch.Tensor:
    """(3D,) row order of the qkv weight for the fast RoPE path: each query and key head's features
    in ``interleaved_order``, the value rows unchanged."""
    D, Dh = cfg.n_embd, cfg.n_embd // cfg.n_head
    with torch.device("cpu"):  # also while the model is being built on the meta device
        heads = torch.arange(2 * cfg.n_head).unsqueeze(1) * Dh  # (2H, 1): query, key heads
        qk_rows = (heads + interleaved_order(Dh)).reshape(-1)  # (2D,)
        return torch.cat([qk_rows, torch.arange(2 * D, 3 * D)])  # (3D,)


class SelfAttention(nn.Module):
    def __init__(self, cfg: TinyTransformerConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.causal = cfg.causal
        self.fast = cfg.fast_attention
        self.fast_rope = cfg.fast_rope
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        # For the fast RoPE path: qkv weight rows with every query/key head's features in
        # interleaved order, value rows as they are. The weights themselves stay in LLaDA's layout.
        self.register_buffer("interleaved_rows", interleaved_qkv_rows(cfg), persistent=False)

    def qkv_readable(
        self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values (B, H, T, Dh), RoPE applied to q and k as rotate-half."""
        B, T, D = x.shape
        H, Dh = self.n_head, D // self.n_head
        q, k, v = self.qkv(x).split(D, dim=-1)  # 3 x (B, T, D)
        q, k, v = (z.view(B, T, H, Dh).transpose(1, 2) for z in (q, k, v))  # (B, H, T, Dh)
        if cos is not None:  # RoPE; None when the model uses learned absolute positions
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, H, T, Dh)
        return q, k, v

    def qkv_fast(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The same q, k, v with q and k in interleaved feature order, rotated in one kernel
        (every score q . k is unchanged: see minillada.models.rope)."""
        B, T, D = x.shape
        H, Dh = self.n_head, D // self.n_head
        weight = self.qkv.weight.index_select(0, self.interleaved_rows)  # (3D, D)
        qk, v = F.linear(x, weight).split([2 * D, D], dim=-1)  # (B, T, 2D), (B, T, D)
        cos, sin = cos.view(T, 1, 1, Dh), sin.view(T, 1, 1, Dh)  # broadcast over (2, H)
        q, k = apply_rope_interleaved(qk.view(B, T, 2, H, Dh), cos, sin).unbind(2)
        return q.transpose(1, 2), k.transpose(1, 2), v.view(B, T, H, Dh).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor | None,
        sin: torch.Tensor | None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, D = x.shape
        if cos is None or not self.fast_rope:
            q, k, v = self.qkv_readable(x, cos, sin)  # (B, H, T, Dh) each
        else:
            q, k, v = self.qkv_fast(x, cos, sin)
        y = attention(q, k, v, bias, causal=self.causal, fast=self.fast)  # (B, H, T, Dh)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.proj(y)


class MLP(nn.Module):
    """Two linear layers with SiLU between: the activation LLaDA uses (lesson 4 adds its gating).

    On a laptop CPU SiLU is about 4x faster than GELU, which keeps this model as fast as nanoGPT's.
    """

    def __init__(self, cfg: TinyTransformerConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.silu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: TinyTransformerConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.n_embd, bias=False)
        self.attn = SelfAttention(cfg)
        self.mlp_norm = nn.LayerNorm(cfg.n_embd, bias=False)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor | None,
        sin: torch.Tensor | None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, bias)
        x = x + self.mlp(self.mlp_norm(x))
        return x


class TinyTransformer(nn.Module):
    """Token ids (B, T) -> logits (B, T, V), with the same interface as LLaDAModel.

    The weights are drawn from ``generator`` (default: a generator seeded with 0), never from the
    global RNG: the layers are built on the meta device (no memory, no default initialisation),
    materialised once, and filled by ``init_weights``.
    """

    def __init__(self, cfg: TinyTransformerConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.config = cfg
        with torch.device("meta"):
            self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
            if cfg.positions == "learned":
                self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
            self.final_norm = nn.LayerNorm(cfg.n_embd, bias=False)
            self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)  # untied, as in LLaDA
        self.to_empty(device="cpu")
        for block in self.blocks:  # buffers are functions of the config: computed, not drawn
            block.attn.register_buffer("interleaved_rows", interleaved_qkv_rows(cfg), False)
        cos, sin = rope_tables(cfg.block_size, cfg.n_embd // cfg.n_head, cfg.rope_theta)
        # Not saved in checkpoints: they are a function of the config.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights(generator)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """GPT-2's init: Normal(0, 0.02) for embeddings and linear layers, with the residual
        projections (attention and MLP outputs) shrunk by 1/sqrt(2 n_layer) so the residual stream
        stays O(1); LayerNorm weights 1."""
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif name.endswith(("attn.proj.weight", "mlp.proj.weight")):
                p.normal_(0.0, residual_std, generator=g)
            else:
                p.normal_(0.0, 0.02, generator=g)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token ids (B, T) and an optional keep-mask (B, T) of 1 = token, 0 = padding.

        Returns logits (B, T, V).
        """
        B, T = ids.shape
        if T > self.config.block_size:
            raise ValueError(
                f"Sequence of length {T} is longer than the model's context "
                f"block_size={self.config.block_size}; "
                "shorten it or build a model with a larger block_size."
            )
        if attention_mask is not None and attention_mask.shape != ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the ids have shape "
                f"{tuple(ids.shape)}; pass one 0/1 entry per token (1 = keep, 0 = padding)."
            )
        x = self.tok_emb(ids)  # (B, T, D)
        if self.config.positions == "learned":
            x = x + self.pos_emb(torch.arange(T, device=ids.device))  # (B, T, D)
            cos = sin = None
        else:
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, Dh)
        bias = attention_bias(attention_mask, x.dtype)  # None or (B, 1, 1, T)
        for block in self.blocks:
            x = block(x, cos, sin, bias)
        x = self.final_norm(x)
        return self.head(x)  # (B, T, V)
