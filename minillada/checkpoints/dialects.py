"""The two snapshot layouts ("dialects") of the released weights, each an explicit table.

* **LLaDA** (GSAI-ML/LLaDA-8B-Base, -Instruct): OLMo-style. config.json uses LLaDA's own field names
  (``d_model``, ``n_layers``, ...; ``model_type: "llada"``) and tensors are called
  ``model.transformer.blocks.N.q_proj.weight``. LLaDAModel uses these names itself, so its table
  is the identity.
* **iLLaDA** (GSAI-ML/iLLaDA-8B-Base, -Instruct): Llama-style. config.json uses Hugging Face's
  Llama names (``hidden_size``, ``num_hidden_layers``, ``num_key_value_heads``, ``rope_theta``,
  ``tie_word_embeddings``, ...; ``model_type: "illada"``) and tensors are called
  ``model.layers.N.self_attn.q_proj.weight``. The head is tied to the embedding; whether
  ``lm_head.weight`` is stored in the shards as well is not known outside the authors, so both are
  accepted (when it is stored, it must equal the embedding).

The dialect of a folder is chosen by config.json's ``model_type``. Values no public source gives
for iLLaDA (RoPE theta, the norm epsilon, special ids) are read from config.json; a config that
lacks one is refused with the name of the field, never filled with a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from minillada.models.llada import LLaDAConfig

# LLaDAModel parameter names, {n} = block number (LLaDA's released names)
_WTE = "model.transformer.wte.weight"
_BLOCK = "model.transformer.blocks.{n}."
_LN_F = "model.transformer.ln_f.weight"
_HEAD = "model.transformer.ff_out.weight"
_BLOCK_PARTS = (
    "attn_norm",
    "q_proj",
    "k_proj",
    "v_proj",
    "attn_out",
    "ff_norm",
    "ff_proj",
    "up_proj",
    "ff_out",
)

# released key -> LLaDAModel key. Spelled out so that a reader sees every tensor of each format.
LLADA_NAMES: dict[str, str] = {
    _WTE: _WTE,
    **{_BLOCK + p + ".weight": _BLOCK + p + ".weight" for p in _BLOCK_PARTS},
    _LN_F: _LN_F,
    _HEAD: _HEAD,
}
ILLADA_NAMES: dict[str, str] = {
    "model.embed_tokens.weight": _WTE,
    "model.layers.{n}.input_layernorm.weight": _BLOCK + "attn_norm.weight",
    "model.layers.{n}.self_attn.q_proj.weight": _BLOCK + "q_proj.weight",
    "model.layers.{n}.self_attn.k_proj.weight": _BLOCK + "k_proj.weight",
    "model.layers.{n}.self_attn.v_proj.weight": _BLOCK + "v_proj.weight",
    "model.layers.{n}.self_attn.o_proj.weight": _BLOCK + "attn_out.weight",
    "model.layers.{n}.post_attention_layernorm.weight": _BLOCK + "ff_norm.weight",
    "model.layers.{n}.mlp.gate_proj.weight": _BLOCK + "ff_proj.weight",
    "model.layers.{n}.mlp.up_proj.weight": _BLOCK + "up_proj.weight",
    "model.layers.{n}.mlp.down_proj.weight": _BLOCK + "ff_out.weight",
    "model.norm.weight": _LN_F,
    "lm_head.weight": _HEAD,  # tied: absent from LLaDAModel, checked against the embedding
}

# iLLaDA config.json field -> LLaDAConfig field (the architecture's numbers)
ILLADA_CONFIG_FIELDS: dict[str, str] = {
    "hidden_size": "d_model",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_kv_heads",
    "intermediate_size": "mlp_hidden_size",
    "vocab_size": "vocab_size",
    "max_position_embeddings": "max_sequence_length",
    "rope_theta": "rope_theta",
    "rms_norm_eps": "rms_norm_eps",
    "tie_word_embeddings": "weight_tying",
    "eos_token_id": "eos_token_id",
    "pad_token_id": "pad_token_id",
    "mask_token_id": "mask_token_id",
}
# values of Llama-style fields that this implementation supports (an absent field agrees)
ILLADA_SUPPORTED: dict[str, Any] = {
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "rope_scaling": None,
    "attention_dropout": 0.0,
}
ILLADA_REQUIRED = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "rope_theta",
    "rms_norm_eps",
)
# what a config written from a preset carries besides the numbers (iLLaDA's published layout)
ILLADA_INFO: dict[str, Any] = {
    "architectures": ["ILLaDAForCausalLM"],
    "auto_map": {
        "AutoConfig": "configuration_illada.ILLaDAConfig",
        "AutoModelForCausalLM": "modeling_illada.ILLaDAForCausalLM",
    },
    "model_type": "illada",
    "torch_dtype": "bfloat16",
    **ILLADA_SUPPORTED,
}


def illada_from_hf_config(hf: dict[str, Any]) -> LLaDAConfig:
    """LLaDAConfig of an iLLaDA (Llama-style) config.json dict; other fields kept in hf_extra."""
    scaling = hf.get("rope_scaling")
    if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) == "default":
        scaling = None  # transformers writes {"rope_type": "default"} for "no scaling"
    wrong = [
        f"{k}={hf[k]!r} (this implementation needs {v!r})"
        for k, v in ILLADA_SUPPORTED.items()
        if k in hf and (scaling if k == "rope_scaling" else hf[k]) != v
    ]
    if wrong:
        raise ValueError(
            "This config.json asks for what minillada's LLaDAModel does not implement: "
            + "; ".join(wrong)
            + ". iLLaDA is a Llama block (SiLU-gated MLP, RMSNorm, RoPE without scaling, no "
            "biases) with bidirectional attention; use a config with those values."
        )
    absent = [k for k in ILLADA_REQUIRED if hf.get(k) is None]
    if absent:
        raise ValueError(
            f"This iLLaDA config.json lacks {absent}. minillada reads these from the snapshot and "
            "never guesses them (iLLaDA's RoPE theta and norm epsilon are not published "
            "elsewhere); use the config.json that came with the weights."
        )
    if hf["num_attention_heads"] % hf["num_key_value_heads"]:
        raise ValueError(
            f"num_attention_heads={hf['num_attention_heads']} is not a multiple of "
            f"num_key_value_heads={hf['num_key_value_heads']}: with grouped-query attention every "
            "key/value head serves a whole group of query heads."
        )
    if "head_dim" in hf and hf["head_dim"] * hf["num_attention_heads"] != hf["hidden_size"]:
        raise ValueError(
            f"head_dim={hf['head_dim']} x num_attention_heads={hf['num_attention_heads']} is not "
            f"hidden_size={hf['hidden_size']}; minillada's attention needs D = H x Dh."
        )
    known = {ours: hf[theirs] for theirs, ours in ILLADA_CONFIG_FIELDS.items() if theirs in hf}
    known["weight_tying"] = bool(hf.get("tie_word_embeddings", False))
    extra = {k: v for k, v in hf.items() if k not in ILLADA_CONFIG_FIELDS}
    if isinstance(known.get("eos_token_id"), list):  # transformers allows several EOS ids: the
        # model keeps the first (the loader swaps in the tokenizer's EOS when it is listed), and
        # the whole list is kept to write back and for the stop rules
        extra["eos_token_ids"] = [int(i) for i in known["eos_token_id"]]
        known["eos_token_id"] = extra["eos_token_ids"][0] if extra["eos_token_ids"] else None
    for ours in ("mask_token_id", "eos_token_id", "pad_token_id"):
        known.setdefault(ours, None)  # unknown: never LLaDA's defaults (126336 is a word here)
    return LLaDAConfig(**known, embedding_size=hf["vocab_size"], dialect="illada", hf_extra=extra)


def illada_to_hf_config(config: LLaDAConfig) -> dict[str, Any]:
    """The iLLaDA config.json dict of ``config`` (sorted keys); round-trips what was read."""
    if config.vocab_rows != config.vocab_size:
        raise ValueError(
            f"iLLaDA's config.json has one vocab_size for the embedding and the tokenizer; this "
            f"config has embedding_size={config.embedding_size} != vocab_size={config.vocab_size}."
        )
    missing = [k for k in ("rope_theta", "rms_norm_eps") if getattr(config, k) is None]
    if missing:
        raise ValueError(f"Cannot write an iLLaDA config.json with {missing} unset; set them.")
    base = dict(config.hf_extra) if config.hf_extra else dict(ILLADA_INFO)
    eos_list = base.pop("eos_token_ids", None)
    numbers = {theirs: getattr(config, ours) for theirs, ours in ILLADA_CONFIG_FIELDS.items()}
    if eos_list:
        numbers["eos_token_id"] = eos_list
    numbers["num_key_value_heads"] = config.kv_heads
    numbers["intermediate_size"] = config.hidden_size
    numbers["tie_word_embeddings"] = config.weight_tying
    if "head_dim" in base:
        numbers["head_dim"] = config.head_dim
    for key in ("eos_token_id", "pad_token_id", "mask_token_id"):
        if numbers[key] is None and key not in base:
            del numbers[key]  # unknown ids are left out, not written as null
    return dict(sorted({**base, **numbers}.items()))


def llada_from_hf_config(hf: dict[str, Any]) -> LLaDAConfig:
    return LLaDAConfig.from_hf_config(hf)


def llada_to_hf_config(config: LLaDAConfig) -> dict[str, Any]:
    if config.weight_tying:
        raise ValueError(
            "LLaDA's released layout has an untied head; a tied model is saved in the iLLaDA "
            "dialect (save_hf_checkpoint(..., dialect='illada'))."
        )
    return replace(config, dialect="llada").to_hf_config()


@dataclass(frozen=True)
class Dialect:
    """One snapshot layout: its config.json reader and writer and its tensor-name table."""

    name: str  # "llada" or "illada", config.json's model_type
    names: dict[str, str]  # released key -> LLaDAModel key ({n} = block number)
    read_config: Callable[[dict[str, Any]], LLaDAConfig]
    write_config: Callable[[LLaDAConfig], dict[str, Any]]
    head_key: str  # the released key of the output head

    def __post_init__(self) -> None:
        object.__setattr__(self, "_to_model", _compile(self.names))
        object.__setattr__(self, "_to_released", _compile({b: a for a, b in self.names.items()}))

    def to_model_key(self, key: str) -> str | None:
        """The LLaDAModel parameter a released key fills, or None if the table has no rule."""
        return _map(key, self._to_model)

    def to_released_key(self, key: str) -> str:
        """The released key under which a LLaDAModel parameter is saved."""
        out = _map(key, self._to_released)
        if out is None:
            raise KeyError(f"No rule in the {self.name} name table for parameter {key!r}.")
        return out


def _compile(table: dict[str, str]) -> list[tuple[re.Pattern[str], str]]:
    return [
        (re.compile(re.escape(a).replace(r"\{n\}", r"(?P<n>\d+)") + "$"), b)
        for a, b in table.items()
    ]


def _map(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, target in rules:
        m = pattern.match(key)
        if m:
            return target.format(**m.groupdict())
    return None


DIALECTS: dict[str, Dialect] = {
    "llada": Dialect("llada", LLADA_NAMES, llada_from_hf_config, llada_to_hf_config, _HEAD),
    "illada": Dialect(
        "illada", ILLADA_NAMES, illada_from_hf_config, illada_to_hf_config, "lm_head.weight"
    ),
}


# the field each layout names its width with: how a config.json shows its layout whatever its
# model_type says
_LAYOUT_FIELDS = {"llada": ("d_model", "n_layers"), "illada": ("hidden_size", "num_hidden_layers")}


def dialect_of(hf: dict[str, Any]) -> Dialect:
    """The dialect a config.json dict is written in: its ``model_type`` ("llada" or "illada",
    in any letter case), checked against the field names it uses. Anything else is refused with
    what this folder holds and how it differs from the two layouts minillada reads."""
    model_type = hf.get("model_type")
    layouts = [name for name, keys in _LAYOUT_FIELDS.items() if all(k in hf for k in keys)]
    if model_type is None and layouts == ["llada"]:
        model_type = "llada"  # LLaDA configs written by minillada 0.1 carried no model_type
    known = isinstance(model_type, str) and model_type.lower() in DIALECTS
    if known and layouts in ([model_type.lower()], []):  # no fields: the reader lists them
        return DIALECTS[model_type.lower()]
    architectures = hf.get("architectures")
    fields = (
        f"the {layouts[0]} layout's field names ({', '.join(_LAYOUT_FIELDS[layouts[0]])})"
        if len(layouts) == 1
        else "neither layout's field names (d_model/n_layers for LLaDA, "
        "hidden_size/num_hidden_layers for iLLaDA)"
    )
    if known:
        why = f"model_type {model_type!r} does not match the fields: the file uses {fields}"
    else:
        why = f"model_type {model_type!r} (architectures {architectures}) and {fields}"
    hint = ""
    if isinstance(architectures, list) and any(
        "llada" not in str(a).lower() and str(a).endswith("ForCausalLM") for a in architectures
    ):
        hint = (
            " Its architecture is an autoregressive model's, not a masked diffusion model's: "
            "minillada's samplers would give nonsense with it."
        )
    raise ValueError(
        f"This config.json has {why}. minillada reads two layouts: 'llada' (model_type "
        "'llada', OLMo-style fields d_model, n_layers, n_heads; architectures ['LLaDAModelLM']; "
        "GSAI-ML/LLaDA-8B-*) and 'illada' (model_type 'illada', Llama-style fields hidden_size, "
        "num_hidden_layers, num_key_value_heads; architectures ['ILLaDAForCausalLM']; "
        f"GSAI-ML/iLLaDA-8B-*).{hint} Use the config.json that came with the weights."
    )
