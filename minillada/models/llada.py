"""The LLaDA architecture (LLaDA-8B-Base/Instruct), one concept per class, at every size.

A LLaDA "mask predictor" is a LLaMA-style transformer with the causal mask removed: pre-norm
residual blocks of RMSNorm -> bidirectional multi-head attention with rotary positions -> RMSNorm ->
SwiGLU MLP, no biases anywhere, and an output head that is not tied to the embedding. Parameter
names follow the released checkpoint exactly (``model.transformer.blocks.N.q_proj.weight`` ...), so
the Hugging Face weights load with an identity name map (see ``minillada.checkpoints.hf``).

Numerics follow the released modeling_llada.py (GSAI-ML/LLaDA-8B-Base on Hugging Face): RMSNorm
normalises in float32 and casts back *before* the weight multiply; q and k are rotated in float32
and cast back; the rotary table is built once on the CPU for ``max_sequence_length`` positions;
attention is ``F.scaled_dot_product_attention`` with no mask unless padding asks for one.

Shapes: B = batch, L = sequence length, D = d_model, H = query heads, Hkv = key/value heads,
Dh = D / H (head dimension), F = MLP hidden width, V = embedding rows (vocabulary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from minillada.models.attention import attention, attention_bias
from minillada.models.kv_cache import KVCache, LayerCache
from minillada.models.rope import apply_rope, rope_tables

# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------

# Fields of the released config.json that describe architecture choices this module implements in
# one way only. from_hf_config refuses a config asking for anything else (a field that is absent is
# taken to agree). They are kept, with every other field this class does not name, in ``hf_extra``.
SUPPORTED_HF_VALUES: dict[str, Any] = {
    "model_type": "llada",
    "block_type": "llama",
    "activation_type": "silu",
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "bias_for_layer_norm": False,
    "attention_layer_norm": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "rope": True,
    "rope_full_precision": True,
    "alibi": False,
    "scale_logits": False,
    "input_emb_norm": False,
    "multi_query_attention": None,
    "block_group_size": 1,
    "attention_dropout": 0.0,
    "residual_dropout": 0.0,
    "embedding_dropout": 0.0,
}

# Informational fields of the released config.json, written by to_hf_config for a config built from
# a preset so that the 8B preset writes the released file exactly.
RELEASED_HF_INFO: dict[str, Any] = {
    **SUPPORTED_HF_VALUES,
    "weight_tying": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    },
    "flash_attention": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "precision": "amp_bf16",
    "transformers_version": "4.46.3",
    "use_cache": False,
}


# Fields of the dataclass that are minillada's own and never written to LLaDA's config.json.
NOT_IN_HF_CONFIG = ("fast_attention", "dialect", "hf_extra")


@dataclass
class LLaDAConfig:
    """Architecture of a LLaDA or iLLaDA model; field names are those of LLaDA's released
    config.json (iLLaDA's Llama-style names are mapped by ``minillada.checkpoints.dialects``).

    ``rope_theta`` and ``rms_norm_eps`` may be None: iLLaDA's are not published, so its preset
    leaves them to the snapshot's config.json; a model built from such a config can be sized and
    built on the meta device but refuses a forward pass until they are set.
    """

    d_model: int = 4096  # D, width of the residual stream
    n_layers: int = 32  # number of blocks
    n_heads: int = 32  # H, query heads; head dimension Dh = D / H
    n_kv_heads: int | None = None  # Hkv, key/value heads (grouped-query attention); None = H
    mlp_hidden_size: int | None = 12288  # F, SwiGLU hidden width; None = mlp_ratio * D
    mlp_ratio: int = 4  # used only when mlp_hidden_size is None
    vocab_size: int = 126464  # tokenizer ids
    embedding_size: int | None = 126464  # V, rows of wte and ff_out (>= vocab_size); None = vocab
    max_sequence_length: int = 4096  # training context; RoPE table size
    rope_theta: float | None = 500_000.0  # RoPE base; None = unknown (read it from the files)
    rms_norm_eps: float | None = 1e-5  # epsilon inside RMSNorm's square root; None = unknown
    weight_tying: bool = False  # True: the output head is the input embedding (one matrix)
    init_std: float = 0.02  # std of the random initial weights (training from scratch only)
    mask_token_id: int | None = 126336  # the [MASK] id the diffusion process writes
    eos_token_id: int | None = 126081  # end of text (also used as padding by LLaDA)
    pad_token_id: int | None = 126081  # padding id
    # minillada only, never written to config.json; none takes part in ==:
    fast_attention: bool = field(default=True, compare=False)  # SDPA; False: spelled out
    # the snapshot layout the model is saved in by default: "llada" (OLMo-style names) or "illada"
    dialect: str = field(default="llada", compare=False)
    # every other config.json field, kept so that to_hf_config writes back what was read
    hf_extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}; "
                f"choose a width that is a multiple of the head count."
            )
        if self.head_dim % 2:
            raise ValueError(
                f"RoPE needs an even head dimension, got d_model/n_heads={self.head_dim}."
            )
        if self.n_heads % self.kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.kv_heads} "
                f"(each key/value head serves a whole group of query heads)."
            )
        if self.vocab_size > self.vocab_rows:
            raise ValueError(
                f"embedding_size={self.embedding_size} is smaller than "
                f"vocab_size={self.vocab_size}; the embedding needs a row per token id."
            )

    # Derived sizes
    @property
    def head_dim(self) -> int:
        """Dh = D / H."""
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Hkv, the number of key/value heads actually used."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def hidden_size(self) -> int:
        """F, the MLP hidden width actually used."""
        return (
            self.mlp_hidden_size
            if self.mlp_hidden_size is not None
            else self.mlp_ratio * self.d_model
        )

    @property
    def vocab_rows(self) -> int:
        """V, rows of the embedding and of the output head (logits per position)."""
        return self.embedding_size if self.embedding_size is not None else self.vocab_size

    @property
    def context_length(self) -> int:
        """The context the model was built for (= max_sequence_length); samplers check it."""
        return self.max_sequence_length

    # Hugging Face config.json
    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> LLaDAConfig:
        """Read a released-style config.json dict; unknown fields are kept for to_hf_config."""
        wrong = [
            f"{k}={hf[k]!r} (this implementation needs {v!r})"
            for k, v in SUPPORTED_HF_VALUES.items()
            if k in hf and hf[k] != v
        ]
        if wrong:
            raise ValueError(
                "This config.json describes an architecture minillada's LLaDAModel does not "
                "implement: " + "; ".join(wrong) + ". minillada implements the released LLaDA-8B "
                "design (LLaMA block, SiLU-gated MLP, RMSNorm, RoPE, no biases); "
                "use a config with those values."
            )
        required = ("d_model", "n_layers", "n_heads", "vocab_size", "max_sequence_length")
        absent = [k for k in required if k not in hf]
        if absent:
            raise ValueError(
                f"This is not a LLaDA config.json: it lacks {absent}. A released-style config "
                f"names at least {list(required)}."
            )
        names = {f.name for f in fields(cls)} - set(NOT_IN_HF_CONFIG)
        known = {k: hf[k] for k in names if k in hf}
        extra = {k: v for k, v in hf.items() if k not in names}
        return cls(**known, hf_extra=extra)

    def to_hf_config(self) -> dict[str, Any]:
        """The config.json dict (sorted keys); from_hf_config(x).to_hf_config() == x."""
        base = self.hf_extra if self.hf_extra else RELEASED_HF_INFO
        names = [f.name for f in fields(self) if f.name not in NOT_IN_HF_CONFIG]
        out = {**base, **{k: getattr(self, k) for k in names}}
        return dict(sorted(out.items()))

    def differences(self, other: LLaDAConfig) -> list[str]:
        """Architecture fields on which two configs disagree, as 'name: self vs other' lines."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} vs {getattr(other, f.name)!r}"
            for f in fields(self)
            if f.compare and getattr(self, f.name) != getattr(other, f.name)
        ]


# Named sizes, from a toy that trains in seconds to the released 8B. Small presets leave the special
# token ids to the tokenizer they are paired with.
_NO_SPECIAL = dict(mask_token_id=None, eos_token_id=None, pad_token_id=None)
PRESETS: dict[str, LLaDAConfig] = {
    # tests and exercises: trains in seconds on a CPU
    "tiny": LLaDAConfig(
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=4,
        mlp_hidden_size=192,
        vocab_size=512,
        embedding_size=512,
        max_sequence_length=128,
        rope_theta=10_000.0,
        **_NO_SPECIAL,
    ),
    # lesson-4 subword model: a few CPU minutes
    "small": LLaDAConfig(
        d_model=256,
        n_layers=4,
        n_heads=4,
        n_kv_heads=4,
        mlp_hidden_size=768,
        vocab_size=4096,
        embedding_size=4096,
        max_sequence_length=256,
        rope_theta=10_000.0,
        **_NO_SPECIAL,
    ),
    # a larger CPU model (~40M parameters)
    "medium": LLaDAConfig(
        d_model=512,
        n_layers=8,
        n_heads=8,
        n_kv_heads=8,
        mlp_hidden_size=1536,
        vocab_size=8192,
        embedding_size=8192,
        max_sequence_length=512,
        rope_theta=10_000.0,
        **_NO_SPECIAL,
    ),
    # ~1.03B parameters with the released vocabulary; the checkpoint-loading benchmark uses it
    "llada_1b": LLaDAConfig(
        d_model=2048,
        n_layers=10,
        n_heads=16,
        n_kv_heads=16,
        mlp_hidden_size=5632,
        max_sequence_length=4096,
    ),
    # GSAI-ML/LLaDA-8B-Base and -Instruct (identical architecture)
    "llada_8b": LLaDAConfig(
        d_model=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=32,
        mlp_hidden_size=12288,
        vocab_size=126464,
        embedding_size=126464,
        max_sequence_length=4096,
        rope_theta=500_000.0,
    ),
    # GSAI-ML/iLLaDA-8B-Base and -Instruct (iLLaDA paper and model card): grouped-query attention
    # with 8 key/value heads, a wider MLP, a larger vocabulary, twice the context and a tied head.
    # RoPE theta, the norm epsilon and the special ids are not published: None here, read from the
    # snapshot's files (minillada.checkpoints.hf.read_hf_config).
    "illada_8b": LLaDAConfig(
        d_model=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=8,
        mlp_hidden_size=14336,
        vocab_size=155136,
        embedding_size=155136,
        max_sequence_length=8192,
        rope_theta=None,
        rms_norm_eps=None,
        weight_tying=True,
        dialect="illada",
        **_NO_SPECIAL,
    ),
    # ~1B parameters in iLLaDA's shape (GQA 4:1, tied head, its vocabulary): the loading benchmark
    "illada_1b": LLaDAConfig(
        d_model=2048,
        n_layers=12,
        n_heads=16,
        n_kv_heads=4,
        mlp_hidden_size=7168,
        vocab_size=155136,
        embedding_size=155136,
        max_sequence_length=8192,
        rope_theta=10_000.0,  # a stand-in: this preset is never a released model
        rms_norm_eps=1e-5,
        weight_tying=True,
        dialect="illada",
        **_NO_SPECIAL,
    ),
}


def preset(name: str, **overrides: Any) -> LLaDAConfig:
    """A copy of the named preset, with fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise KeyError(f"Unknown LLaDA preset {name!r}; choose one of {sorted(PRESETS)}.")
    config = replace(PRESETS[name], **overrides)
    config.hf_extra = dict(config.hf_extra)  # never share the preset's dict
    return config


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps), computed in float32, cast back, then times a learned weight."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        x = x.to(dtype)  # cast back *before* the weight multiply, as LLaDA (and HF LLaMA) do
        return self.weight * x


class RotaryEmbedding(nn.Module):
    """Rotate-half RoPE with base theta; tables in float32, built on the CPU, cached per device.

    Like the released model, the table is computed once for ``max_sequence_length`` positions and
    sliced; a longer input gets a table of its own length. Building on the CPU (not the GPU) matters
    for bit-exact agreement: sin/cos kernels differ between devices in the last bit. The tables are
    not buffers, so they never enter a state dict and a model built on the meta device needs none.
    """

    def __init__(self, head_dim: int, theta: float, max_sequence_length: int):
        super().__init__()
        self.head_dim, self.theta, self.max_len = head_dim, theta, max_sequence_length
        self._cache: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for positions 0..seq_len-1, each (L, Dh) float32 on ``device``."""
        n = max(seq_len, self.max_len)
        key = (n, str(device))
        if key not in self._cache:
            cos, sin = rope_tables(n, self.head_dim, self.theta, device="cpu")  # (n, Dh)
            self._cache[key] = (cos.to(device), sin.to(device))
        cos, sin = self._cache[key]
        return cos[:seq_len], sin[:seq_len]

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate q (B, H, L, Dh) and k (B, Hkv, L, Dh) in float32; returned in their own dtype."""
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin)


class Attention(nn.Module):
    """Bidirectional multi-head attention with RoPE and optional grouped-query (fewer K/V) heads."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        D, Dkv = config.d_model, config.kv_heads * config.head_dim
        self.config = config
        self.q_proj = nn.Linear(D, D, bias=False)
        self.k_proj = nn.Linear(D, Dkv, bias=False)
        self.v_proj = nn.Linear(D, Dkv, bias=False)
        self.attn_out = nn.Linear(D, D, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        rotary: RotaryEmbedding,
        cos: torch.Tensor,
        sin: torch.Tensor,
        bias: torch.Tensor | None = None,
        layer_cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D). With ``layer_cache``: x holds only the window of positions
        ``layer_cache.start ..`` and the keys and values of every other position come from the
        cache (lesson 8); while recording, this layer's keys and values are stored in it."""
        B, L, D = x.shape
        H, Hkv, Dh = self.config.n_heads, self.config.kv_heads, self.config.head_dim
        # feature j of a projection belongs to head j // Dh
        q = self.q_proj(x).view(B, L, H, Dh).transpose(1, 2)  # (B, H, L, Dh)
        k = self.k_proj(x).view(B, L, Hkv, Dh).transpose(1, 2)  # (B, Hkv, L, Dh)
        v = self.v_proj(x).view(B, L, Hkv, Dh).transpose(1, 2)  # (B, Hkv, L, Dh)
        q, k = rotary(q, k, cos, sin)
        if layer_cache is not None:
            k, v = layer_cache.splice(k, v)  # (B, Hkv, N, Dh): the window's fresh, the rest cached
        if Hkv != H:  # query head h uses key/value head h // (H / Hkv)
            k = k.repeat_interleave(H // Hkv, dim=1, output_size=H)  # (B, H, L, Dh)
            v = v.repeat_interleave(H // Hkv, dim=1, output_size=H)  # (B, H, L, Dh)
        x = attention(q, k, v, bias, fast=self.config.fast_attention)  # (B, H, L, Dh)
        x = x.transpose(1, 2).contiguous().view(B, L, D)  # (B, L, D): heads side by side again
        return self.attn_out(x)


class LLaDAMLP(nn.Module):
    """SwiGLU: ff_out(silu(ff_proj(x)) * up_proj(x)); ff_proj is the gate, up_proj is linear."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        D, F_ = config.d_model, config.hidden_size
        self.ff_proj = nn.Linear(D, F_, bias=False)  # gate branch (SiLU applied)
        self.up_proj = nn.Linear(D, F_, bias=False)  # linear branch
        self.ff_out = nn.Linear(F_, D, bias=False)  # down projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.ff_proj(x)) * self.up_proj(x)  # (B, L, F)
        return self.ff_out(x)  # (B, L, D)


class LLaDABlock(nn.Module):
    """Pre-norm residual block: x + attention(attn_norm(x)), then x + mlp(ff_norm(x)).

    The released checkpoint stores a block flat (``blocks.N.q_proj``, not
    ``blocks.N.attn.q_proj``), so the block registers the layers of its Attention and LLaDAMLP
    under those names itself and keeps the two halves as plain (unregistered) helpers; each layer
    object is shared, so loading, ``.to()`` and ``to_empty()`` act on both views at once.
    """

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        attn, mlp = Attention(config), LLaDAMLP(config)
        self.attn_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.q_proj, self.k_proj, self.v_proj = attn.q_proj, attn.k_proj, attn.v_proj
        self.attn_out = attn.attn_out
        self.ff_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.ff_proj, self.up_proj, self.ff_out = mlp.ff_proj, mlp.up_proj, mlp.ff_out
        self._halves = (attn, mlp)  # a tuple is not registered: no second name for the same weights

    @property
    def attn(self) -> Attention:
        return self._halves[0]

    @property
    def mlp(self) -> LLaDAMLP:
        return self._halves[1]

    def forward(
        self,
        x: torch.Tensor,
        rotary: RotaryEmbedding,
        cos: torch.Tensor,
        sin: torch.Tensor,
        bias: torch.Tensor | None = None,
        layer_cache: LayerCache | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rotary, cos, sin, bias, layer_cache)
        x = x + self.mlp(self.ff_norm(x))
        return x


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class LLaDAModel(nn.Module):
    """Token ids (B, L) -> logits (B, L, V): LLaDA and iLLaDA at every size, the differences being
    configuration (grouped-query heads, MLP width, vocabulary, context, a tied head).

    State-dict keys are LLaDA's released keys; iLLaDA's Llama-style snapshots are mapped onto them
    by ``minillada.checkpoints.dialects``. With ``weight_tying`` the head has no weight of its own:
    logits are computed with the embedding matrix, which appears once in ``parameters()`` (and so
    once in the optimizer) and stays one tensor through ``.to()``.

    ``device="meta"`` (or building inside ``with torch.device("meta"):``) creates every parameter
    without memory, in well under a second even for 8B; a checkpoint loader then fills them.
    Otherwise the weights are initialised from ``generator`` (default: a generator seeded with 0),
    never from the global RNG.
    """

    supports_kv_cache = True  # forward(..., cache=) (lesson 8's approximate caches)
    supports_positions = True  # forward(..., positions=) (batched rows of different lengths)
    supports_logits_from = True  # forward(..., logits_from=) (logits of the positions needed)
    # True: a forward with gradients keeps only each block's input and recomputes the block in
    # backward, trading one more forward for activation memory (the 8B model under RL, lesson 9)
    gradient_checkpointing = False

    def __init__(
        self,
        config: LLaDAConfig,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.config = config
        target = torch.device(device) if device is not None else torch.empty(()).device
        with torch.device("meta"):  # build without memory, then materialise once
            transformer = nn.ModuleDict(
                {
                    # from_pretrained skips nn.Embedding's own init (a slow first call on meta)
                    "wte": nn.Embedding.from_pretrained(
                        torch.empty(config.vocab_rows, config.d_model), freeze=False
                    ),
                    "blocks": nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
                    "ln_f": RMSNorm(config.d_model, config.rms_norm_eps),
                }
            )
            if not config.weight_tying:  # LLaDA: a head of its own
                transformer["ff_out"] = nn.Linear(config.d_model, config.vocab_rows, bias=False)
            # "model.transformer." reproduces the released names (LLaDAModelLM.model.transformer)
            self.model = nn.ModuleDict({"transformer": transformer})
        self.rotary = RotaryEmbedding(
            config.head_dim, config.rope_theta, config.max_sequence_length
        )
        if target.type != "meta":
            self.to_empty(device="cpu")
            self.init_weights(generator)
            self.to(device=target, dtype=dtype)
        elif dtype is not None:
            self.to(dtype=dtype)

    @property
    def transformer(self) -> nn.ModuleDict:
        return self.model.transformer

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Normal(0, init_std) weights; residual outputs scaled by 1/sqrt(2 n_layers); norms 1.

        (The released model was trained from the "mitchell" init; this simpler GPT-2-style init is
        for training small models from scratch in this course.)
        """
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        std = self.config.init_std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
                p.fill_(1.0)
            elif ".blocks." in name and name.endswith(("attn_out.weight", "ff_out.weight")):
                p.normal_(0.0, std / math.sqrt(2 * self.config.n_layers), generator=g)
            else:
                p.normal_(0.0, std, generator=g)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def head_weight(self) -> torch.Tensor:
        """The output head, V x D: the embedding itself when the head is tied."""
        t = self.transformer
        return t.wte.weight if self.config.weight_tying else t.ff_out.weight

    def forward(
        self,
        ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        start: int = 0,
        positions: torch.Tensor | None = None,
        logits_from: int | None = None,
    ) -> torch.Tensor:
        """Token ids (B, L) and an optional keep-mask (B, L) of 1 = token, 0 = padding -> logits.

        ``positions`` (B, W), optional: the RoPE position of every id (default 0, 1, ... from the
        start of the canvas, as the released code numbers them). A batch of left-padded rows passes
        each row's positions counted from its first real token (``row_positions``), so that every
        row computes exactly what it computes alone: RoPE makes a constant shift harmless in exact
        arithmetic, but its float32 tables differ in the last bits from one position to the next.

        ``logits_from`` (a full forward only): return the logits of positions logits_from .. L
        only. A sampler needs those of the current block and after it; the output head over the
        whole canvas would cost 2 x D x V per position for nothing.

        With a ``cache`` (lesson 8): a recording cache (``KVCache.record()``) keeps every layer's
        keys and values of this full forward; a filled one makes ``ids`` the window of positions
        ``start .. start + W`` only, whose logits (B, W, V) are computed with the other positions'
        keys and values taken from the cache, as they were when it was recorded (an
        approximation: in a bidirectional model they change whenever a token is revealed). The
        keep-mask always covers the whole sequence."""
        B, W = ids.shape
        window = cache is not None and not cache.recording
        if window:  # ids are positions start .. start + W of the N the cache was recorded on
            cache.require_filled()
            N = cache.length
            if not (0 <= start and start + W <= N):
                raise ValueError(
                    f"The window [{start}, {start + W}) does not fit the {N} positions the cache "
                    "was recorded on; record it again on the current canvas."
                )
            if attention_mask is not None and attention_mask.shape != (B, N):
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}; with a cache it "
                    f"covers the whole sequence, ({B}, {N})."
                )
        else:
            N, start = W, 0
            if attention_mask is not None and attention_mask.shape != ids.shape:
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)} but the ids have "
                    f"shape {tuple(ids.shape)}; pass one 0/1 entry per token (1 = keep, 0 = "
                    "padding)."
                )
            missing = [k for k in ("rope_theta", "rms_norm_eps") if getattr(self.config, k) is None]
            if missing:
                raise ValueError(
                    f"The config leaves {missing} unset: for iLLaDA they are not published, so "
                    "they must come from the snapshot's config.json. Load the model with "
                    "minillada.checkpoints.hf.load_hf_checkpoint, or build it from read_hf_config, "
                    "or set them explicitly with preset(..., rope_theta=..., rms_norm_eps=...)."
                )
        t = self.transformer
        x = t.wte(ids)  # (B, W, D)
        if positions is None:
            cos, sin = self.rotary.tables(N, x.device)  # (N, Dh) float32
            cos, sin = cos[start : start + W], sin[start : start + W]  # a window keeps positions
        else:
            if positions.shape != ids.shape:
                raise ValueError(
                    f"positions has shape {tuple(positions.shape)} but the ids have shape "
                    f"{tuple(ids.shape)}: pass one position per id."
                )
            positions = positions.to(x.device)
            cos, sin = self.rotary.tables(max(N, int(positions.max()) + 1), x.device)
            cos, sin = cos[positions][:, None], sin[positions][:, None]  # (B, 1, W, Dh): per row
        bias = attention_bias(attention_mask, x.dtype)  # None or (B, 1, 1, N): over all keys
        n_layers = len(t.blocks)
        if window:
            layers = [cache.layer(n, start) for n in range(n_layers)]
        elif cache is not None:
            layers = cache.start_recording(n_layers, N)
        else:
            layers = [None] * n_layers
        recompute = self.gradient_checkpointing and torch.is_grad_enabled() and cache is None
        for block, layer in zip(t.blocks, layers, strict=True):
            if recompute:  # keep only each block's input; its inside is recomputed in backward
                x = checkpoint(block, x, self.rotary, cos, sin, bias, None, use_reentrant=False)
            else:
                x = block(x, self.rotary, cos, sin, bias, layer)  # (B, W, D)
        if cache is not None and not window:
            cache.stop_recording()
        if logits_from is not None:
            if window:
                raise ValueError("logits_from is for a full forward; a window is already cut.")
            x = x[:, logits_from:]  # (B, W - logits_from, D): only the positions asked for
        x = t.ln_f(x)
        return F.linear(x, self.head_weight)  # (B, W, V); tied: the embedding matrix
