"""How big a LLaDA model is, from its config alone: exact parameter counts per component, and the
memory its weights and its activations need (lesson 5).

Shapes: B = batch, L = sequence length, D = d_model, F = MLP hidden width, V = vocabulary rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from minillada.models.llada import LLaDAConfig


@dataclass(frozen=True)
class ParameterCount:
    """Exact parameter count of a LLaDAConfig, per component."""

    wte: int  # token embedding, V x D
    per_block: dict[str, int]  # one block, by parameter name
    n_blocks: int
    ln_f: int  # final RMSNorm weight
    ff_out: int  # output head, V x D; 0 when tied to the embedding (it is the same matrix)

    @property
    def blocks(self) -> int:
        return self.n_blocks * sum(self.per_block.values())

    @property
    def per_layer(self) -> int:
        """Parameters of one block."""
        return sum(self.per_block.values())

    @property
    def total(self) -> int:
        return self.wte + self.blocks + self.ln_f + self.ff_out

    @property
    def non_embedding(self) -> int:
        """Everything but the embedding and the head (how model cards count "non-embedding")."""
        return self.blocks + self.ln_f

    def table(self) -> str:
        """A plain-text table of the breakdown."""
        rows = [("wte (embedding)", self.wte)]
        rows += [
            (f"blocks x{self.n_blocks}: {k}", v * self.n_blocks) for k, v in self.per_block.items()
        ]
        head = "ff_out (head)" if self.ff_out else "head: tied to wte"
        rows += [("ln_f", self.ln_f), (head, self.ff_out), ("total", self.total)]
        return "\n".join(f"{name:<28}{n:>16,}  {n / self.total:6.1%}" for name, n in rows)


def count_parameters(config: LLaDAConfig) -> ParameterCount:
    """Exact number of parameters of LLaDAModel(config), computed from the config alone."""
    D, F_, V, Dkv = (
        config.d_model,
        config.hidden_size,
        config.vocab_rows,
        config.kv_heads * config.head_dim,
    )
    per_block = {
        "attn_norm": D,
        "q_proj": D * D,
        "k_proj": Dkv * D,
        "v_proj": Dkv * D,
        "attn_out": D * D,
        "ff_norm": D,
        "ff_proj": F_ * D,
        "up_proj": F_ * D,
        "ff_out": D * F_,
    }
    head = 0 if config.weight_tying else V * D
    return ParameterCount(
        wte=V * D, per_block=per_block, n_blocks=config.n_layers, ln_f=D, ff_out=head
    )


def kv_bytes_per_token(config: LLaDAConfig, bytes_per_value: int = 2) -> int:
    """Bytes of keys and values one token contributes over all layers: 2 x n_layers x Hkv x Dh
    values (bf16: 2 bytes each). A bidirectional model has no exact KV cache, but the approximate
    caches of lesson 8 store exactly this much per cached token; grouped-query attention divides
    it by H / Hkv."""
    return 2 * config.n_layers * config.kv_heads * config.head_dim * bytes_per_value


BYTES_PER_PARAM = {"fp32": 4, "bf16": 2, "int8": 1}


def weight_memory(config: LLaDAConfig) -> dict[str, int]:
    """Bytes for the weights in fp32, bf16 and int8 (int8: 1 byte each, scales not counted)."""
    n = count_parameters(config).total
    return {fmt: n * b for fmt, b in BYTES_PER_PARAM.items()}


def activation_memory(
    config: LLaDAConfig,
    batch_size: int,
    seq_len: int,
    bytes_per_value: int = 2,
    fast_attention: bool = True,
) -> dict[str, int]:
    """Estimated bytes of activations alive at once during one inference forward (no grad).

    Diffusion sampling has no KV cache: attention is bidirectional, so when a step unmasks tokens
    anywhere in the sequence, the keys and values of *every* position change in every layer; each
    step recomputes the whole forward, and only the current step's activations exist.
    (Fast-dLLM-style caches reuse stale keys/values as an approximation.) Activations therefore
    scale with B*L per layer, not with the number of steps. The peak is the largest of: the
    attention half of a block, the MLP half, and the output head (the logits are B*L*V, which
    dominates for LLaDA's 126k vocabulary).
    """
    BL, D, F_, V = batch_size * seq_len, config.d_model, config.hidden_size, config.vocab_rows
    Dkv = config.kv_heads * config.head_dim
    b = bytes_per_value
    residual = 2 * BL * D * b  # the residual stream x and the normalised copy
    # q, k, v; float32 copies of q and k while rotating; keys/values repeated to H heads for GQA
    attention = BL * (D + 2 * Dkv) * b + BL * (D + Dkv) * 4 + 2 * BL * D * b
    scores = 0 if fast_attention else 2 * batch_size * config.n_heads * seq_len**2 * b  # (B,H,L,L)
    mlp = 3 * BL * F_ * b  # gate, up branch, their product
    logits = BL * V * b
    out = {
        "residual_stream": residual,
        "attention": attention + scores,
        "attention_scores (readable path)": scores,
        "mlp": mlp,
        "logits": logits,
    }
    out["peak"] = residual + max(attention + scores, mlp, logits)
    return out


def forward_flops(config: LLaDAConfig, seq_len: int, batch_size: int = 1) -> int:
    """Floating-point operations of one forward pass over ``seq_len`` positions (a multiply-add
    counts 2): every block's matrix products (2 x its weights per position), attention's scores
    and weighted sum (2 x 2 x L x L x D per layer, bidirectional: the whole square), and the head
    (2 x D x V per position). Norms, RoPE and softmax are left out (under 1% at 8B)."""
    BL, L = batch_size * seq_len, seq_len
    counts = count_parameters(config)
    norms = counts.per_block["attn_norm"] + counts.per_block["ff_norm"]
    matmuls = counts.n_blocks * (counts.per_layer - norms)
    attention = 4 * config.n_layers * batch_size * L * L * config.d_model
    head = config.d_model * config.vocab_rows
    return 2 * BL * (matmuls + head) + attention
