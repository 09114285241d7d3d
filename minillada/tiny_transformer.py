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

from minillada.rope import apply_rope, apply_rope_interleaved, interleaved_order, rope_tables


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
    fast_attention: bool = (
        True  # use F.scaled_dot_product_attention; False spells softmax(QK^T)V out
    )
    # RoPE as one complex multiply on reordered features (minillada.rope); False: rotate-half
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
        D, Dh = cfg.n_embd, cfg.n_embd // cfg.n_head
        heads = torch.arange(2 * cfg.n_head).unsqueeze(1) * Dh  # (2H, 1): query heads, key heads
        qk_rows = (heads + interleaved_order(Dh)).reshape(-1)  # (2D,)
        rows = torch.cat([qk_rows, torch.arange(2 * D, 3 * D)])  # (3D,)
        self.register_buffer("interleaved_rows", rows, persistent=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None
    ) -> torch.Tensor:
        B, T, D = x.shape
        H, Dh = self.n_head, D // self.n_head
        if cos is not None and self.fast_rope:
            weight = self.qkv.weight.index_select(0, self.interleaved_rows)  # (3D, D)
            qk, v = F.linear(x, weight).split([2 * D, D], dim=-1)  # (B, T, 2D), (B, T, D)
            # queries and keys rotated together, in one kernel
            cos, sin = cos.view(T, 1, 1, Dh), sin.view(T, 1, 1, Dh)  # broadcast over (2, H)
            q, k = apply_rope_interleaved(qk.view(B, T, 2, H, Dh), cos, sin).unbind(2)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.view(B, T, H, Dh).transpose(1, 2)
        else:
            q, k, v = self.qkv(x).split(D, dim=-1)  # 3 x (B, T, D)
            q, k, v = (z.view(B, T, H, Dh).transpose(1, 2) for z in (q, k, v))  # (B, H, T, Dh)
            if cos is not None:  # RoPE; None when the model uses learned absolute positions
                q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, H, T, Dh)
        if self.fast:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            y = attention_reference(q, k, v, causal=self.causal)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.proj(y)


def attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(Dh)) V, written out; a causal model hides the future with -inf."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, T, T)
    if causal:
        T = q.size(-2)
        future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return scores.softmax(dim=-1) @ v  # (B, H, T, Dh)


class MLP(nn.Module):
    """Two linear layers with SiLU between: the activation LLaDA uses (lesson 4 adds its gating).
    On a laptop CPU SiLU is about 4x faster than GELU, which keeps this model as fast as
    nanoGPT's."""

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
        self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        x = x + self.mlp(self.mlp_norm(x))
        return x


class TinyTransformer(nn.Module):
    def __init__(self, cfg: TinyTransformerConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        if cfg.positions == "learned":
            self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.final_norm = nn.LayerNorm(cfg.n_embd, bias=False)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)  # untied, as in LLaDA
        cos, sin = rope_tables(cfg.block_size, cfg.n_embd // cfg.n_head, cfg.rope_theta)
        # Not saved in checkpoints: they are a function of the config.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2 scaling: residual projections shrink with depth so the residual stream stays O(1).
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") and ".mlp.fc" not in name:
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, V)."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(
                f"Sequence of length {T} is longer than the model's context "
                f"block_size={self.config.block_size}; shorten it or build a model with a larger "
                f"block_size."
            )
        x = self.tok_emb(idx)  # (B, T, D)
        if self.config.positions == "learned":
            x = x + self.pos_emb(torch.arange(T, device=idx.device))  # (B, T, D)
            cos = sin = None
        else:
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, Dh)
        for block in self.blocks:
            x = block(x, cos, sin)
        x = self.final_norm(x)
        return self.head(x)  # (B, T, V)
