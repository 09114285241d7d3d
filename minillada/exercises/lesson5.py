"""Checkers for lesson 5 (notebooks/05_the_8b_architecture.ipynb)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from minillada.checkpoints.dialects import DIALECTS
from minillada.exercises import Case, CheckResult, ExerciseFailed, check, short_repr
from minillada.models.llada import LLaDAConfig, LLaDAModel, preset
from minillada.models.sizing import count_parameters


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _total_parameters(config: LLaDAConfig) -> int:
    return count_parameters(config).total


def check_parameter_count(fn: Callable) -> CheckResult:
    """Exercise 5.1: fn(config) -> the exact number of parameters of LLaDAModel(config)."""
    cases = [
        Case("the released LLaDA-8B (preset 'llada_8b')", (preset("llada_8b"),)),
        Case("the 'tiny' preset", (preset("tiny"),)),
        Case("the 'llada_1b' preset (released vocabulary, 10 blocks)", (preset("llada_1b"),)),
        Case(
            "grouped-query attention: 8 key/value heads for 32 query heads",
            (preset("llada_8b", n_kv_heads=8),),
        ),
        Case(
            "embedding_size larger than vocab_size: the rows count, not the tokens",
            (preset("tiny", vocab_size=500, embedding_size=640),),
        ),
        Case(
            "mlp_hidden_size=None: the MLP width is mlp_ratio * d_model",
            (preset("small", mlp_hidden_size=None, mlp_ratio=3),),
        ),
    ]
    return check(
        "Exercise 5.1",
        fn,
        _total_parameters,
        cases,
        "minillada.models.sizing.count_parameters(config).total",
    )


def _block_keys(config: LLaDAConfig, n: int) -> dict[str, tuple[int, ...]]:
    model = LLaDAModel(config, device="meta")
    prefix = f"model.transformer.blocks.{n}."
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith(prefix)}


def _compare_key_shapes(expected: dict[str, tuple[int, ...]], got: Any) -> None:
    if not isinstance(got, dict):
        raise ExerciseFailed(
            f"expected a dict key -> shape, got {type(got).__name__}: {short_repr(got)}"
        )
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or extra:
        raise ExerciseFailed(
            f"keys differ: missing {missing[:3]}{' ...' if len(missing) > 3 else ''}, "
            f"unexpected {extra[:3]}{' ...' if len(extra) > 3 else ''}"
        )
    for key, shape in expected.items():
        try:
            found = tuple(int(s) for s in got[key])
        except TypeError:
            raise ExerciseFailed(
                f"{key}: expected a shape like {shape}, got {got[key]!r}"
            ) from None
        if found != shape:
            raise ExerciseFailed(f"{key}: expected shape {shape}, got {found}")


def check_block_keys(fn: Callable) -> CheckResult:
    """Exercise 5.2: fn(config, n) -> {released key: shape} of the 9 tensors of block n."""
    cases = [
        Case("block 0 of LLaDA-8B", (preset("llada_8b"), 0)),
        Case("block 31 (the last) of LLaDA-8B", (preset("llada_8b"), 31)),
        Case("block 1 of the 'tiny' preset", (preset("tiny"), 1)),
        Case(
            "grouped-query attention: k_proj and v_proj shrink to n_kv_heads * head_dim rows",
            (preset("llada_8b", n_kv_heads=8), 7),
        ),
    ]
    return check(
        "Exercise 5.2",
        fn,
        _block_keys,
        cases,
        "the state dict of LLaDAModel(config, device='meta')",
        compare=_compare_key_shapes,
    )


def _read_with_safetensors(path: str | Path, key: str) -> torch.Tensor:
    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(key)


def _compare_exactly(expected: torch.Tensor, got: Any) -> None:
    if not torch.is_tensor(got):
        raise ExerciseFailed(f"expected a tensor, got {type(got).__name__}: {short_repr(got)}")
    if got.dtype != expected.dtype:
        raise ExerciseFailed(
            f"expected dtype {expected.dtype}, got {got.dtype}; "
            f"the header's dtype string decides it"
        )
    if tuple(got.shape) != tuple(expected.shape):
        raise ExerciseFailed(
            f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}; "
            f"reshape to the header's shape"
        )
    if not torch.equal(got, expected):
        raise ExerciseFailed(
            "values differ: check the start of the data (8 + header length + data_offsets[0]) "
            f"and the byte count\n  expected {short_repr(expected)}\n  got      {short_repr(got)}"
        )


def check_read_tensor(fn: Callable) -> CheckResult:
    """Exercise 5.3: fn(path, key) -> the tensor, read from the safetensors bytes by hand."""
    g = _seeded(5)
    tensors = {
        "model.transformer.wte.weight": torch.randn(11, 6, generator=g),
        "model.transformer.blocks.0.q_proj.weight": torch.randn(6, 6, generator=g).bfloat16(),
        "half": torch.randn(2, 3, 4, generator=g).half(),
        "counts": torch.randint(-1000, 1000, (5,), generator=g),
        "scalar": torch.tensor(3.5),
        "model.transformer.ln_f.weight": torch.randn(6, generator=g).bfloat16(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "exercise.safetensors")
        save_file(tensors, path, metadata={"format": "pt"})
        cases = [
            Case("a float32 matrix (F32)", (path, "model.transformer.wte.weight")),
            Case(
                "a bfloat16 matrix (BF16), as in LLaDA's shards",
                (path, "model.transformer.blocks.0.q_proj.weight"),
            ),
            Case("a float16 tensor with 3 dimensions (F16)", (path, "half")),
            Case("int64 values (I64)", (path, "counts")),
            Case("a 0-dimensional tensor (shape [])", (path, "scalar")),
            Case(
                "the last tensor of the file (BF16 vector)", (path, "model.transformer.ln_f.weight")
            ),
        ]
        return check(
            "Exercise 5.3",
            fn,
            _read_with_safetensors,
            cases,
            "safetensors.safe_open(...).get_tensor",
            compare=_compare_exactly,
        )


def _attention_parameters(config: LLaDAConfig) -> int:
    count = count_parameters(config).per_block
    return sum(count[k] for k in ("q_proj", "k_proj", "v_proj", "attn_out"))


def check_gqa_parameters(fn: Callable) -> CheckResult:
    """Exercise 5.4: fn(config) -> the parameters of one block's attention (q, k, v and output
    projections) with n_kv_heads key/value heads."""
    cases = [
        Case("LLaDA-8B: 32 query heads, 32 key/value heads", (preset("llada_8b"),)),
        Case("iLLaDA-8B: 32 query heads share 8 key/value heads", (preset("illada_8b"),)),
        Case("one key/value head for all (multi-query attention)", (preset("tiny", n_kv_heads=1),)),
        Case(
            "n_kv_heads=None means as many as query heads",
            (preset("small", n_kv_heads=None),),
        ),
        Case("a 1B iLLaDA shape: 16 query heads, 4 key/value heads", (preset("illada_1b"),)),
    ]
    return check(
        "Exercise 5.4",
        fn,
        _attention_parameters,
        cases,
        "the q, k, v and output entries of minillada.models.sizing.count_parameters(config)",
    )


def _illada_key(llada_key: str) -> str:
    return DIALECTS["illada"].to_released_key(llada_key)


def check_illada_key(fn: Callable) -> CheckResult:
    """Exercise 5.5: fn(LLaDA key) -> the name of the same tensor in an iLLaDA snapshot."""
    keys = [
        "model.transformer.wte.weight",
        "model.transformer.blocks.0.attn_norm.weight",
        "model.transformer.blocks.3.q_proj.weight",
        "model.transformer.blocks.3.k_proj.weight",
        "model.transformer.blocks.11.attn_out.weight",
        "model.transformer.blocks.31.ff_norm.weight",
        "model.transformer.blocks.7.ff_proj.weight",
        "model.transformer.blocks.7.up_proj.weight",
        "model.transformer.blocks.7.ff_out.weight",
        "model.transformer.ln_f.weight",
        "model.transformer.ff_out.weight",
    ]
    what = {
        "wte": "the embedding",
        "attn_norm": "the norm before attention",
        "attn_out": "the attention output projection",
        "ff_norm": "the norm before the MLP",
        "ff_proj": "the MLP gate (SiLU applied)",
        "up_proj": "the MLP's linear branch",
        "ln_f": "the final norm",
    }
    cases = []
    for key in keys:
        part = key.split(".")[-2]
        if key == "model.transformer.ff_out.weight":
            label = "the output head (stored, if at all, as a copy of the tied embedding)"
        elif key.endswith("blocks.7.ff_out.weight"):
            label = "the MLP down projection: a block's ff_out, not the head"
        else:
            label = what.get(part, part)
        cases.append(Case(f"{key} ({label})", (key,)))
    return check(
        "Exercise 5.5",
        fn,
        _illada_key,
        cases,
        "minillada.checkpoints.dialects.DIALECTS['illada'].to_released_key",
    )
