"""Checkers for lesson 5 (notebooks/05_the_8b_architecture.ipynb)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from minillada.checkpoints.dialects import DIALECTS
from minillada.checkpoints.hf import (
    CONFIG_NAME,
    INDEX_NAME,
    load_hf_checkpoint,
    save_hf_checkpoint,
)
from minillada.exercises import (
    Case,
    CheckResult,
    ExerciseFailed,
    check,
    forbidden,
    run_experiment,
    seeded,
    short_repr,
)
from minillada.models.llada import LLaDAConfig, LLaDAModel, preset
from minillada.models.sizing import count_parameters, kv_bytes_per_token


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
        Case(
            "iLLaDA-8B (preset 'illada_8b'): weight_tying=True, the head IS the embedding, one "
            "V x D matrix counted once (7,615,025,152)",
            (preset("illada_8b"),),
        ),
        Case(
            "a small model with a tied head (weight_tying=True) and grouped-query attention",
            (preset("tiny", weight_tying=True, n_kv_heads=2),),
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
    g = seeded(5)
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


# --- Exercise 5.4: the loading loop --------------------------------------------------------------

_ILLADA_TINY = dict(
    d_model=64, n_layers=2, n_heads=8, n_kv_heads=2, mlp_hidden_size=160, vocab_size=300,
    embedding_size=300, max_sequence_length=64,
)  # fmt: skip


def _snapshot(root: Path, name: str, config: LLaDAConfig, seed: int, shards: int, dtype) -> Path:
    model = LLaDAModel(config, generator=seeded(seed))
    return save_hf_checkpoint(model, root / name, num_shards=shards, dtype=dtype)


def _drop_tensor(folder: Path, key: str) -> None:
    """Remove ``key`` from its shard and from the index: a snapshot with a tensor missing."""
    index_path = folder / INDEX_NAME
    index = json.loads(index_path.read_text())
    shard = folder / index["weight_map"].pop(key)
    with safe_open(str(shard), framework="pt") as f:
        kept = {k: f.get_tensor(k).clone() for k in f.keys() if k != key}
    save_file(kept, str(shard), metadata={"format": "pt"})
    index_path.write_text(json.dumps(index, indent=2) + "\n")


def _snapshot_cases(root: Path) -> tuple[list[Case], list[tuple[str, Path, Callable]]]:
    """Four good snapshots (compared with load_hf_checkpoint) and three broken ones (to refuse)."""
    llada, illada = DIALECTS["llada"].to_model_key, DIALECTS["illada"].to_model_key
    bf16 = torch.bfloat16
    good = [
        Case(
            "the 'tiny' preset in bfloat16 over 3 shards, LLaDA's layout (as in the lesson)",
            (_snapshot(root, "tiny", preset("tiny"), 5, 3, bf16), llada),
        ),
        Case(
            "3 blocks in float32 over 5 shards",
            (_snapshot(root, "fp32", preset("tiny", n_layers=3), 11, 5, None), llada),
        ),
        Case(
            "grouped-query attention (2 key/value heads): k_proj and v_proj are not square",
            (_snapshot(root, "gqa", preset("tiny", n_kv_heads=2), 12, 4, bf16), llada),
        ),
        Case(
            "iLLaDA's layout (Llama-style names, a tied head) with iLLaDA's name table",
            (_snapshot(root, "illada", preset("illada_1b", **_ILLADA_TINY), 13, 2, bf16), illada),
        ),
    ]
    wrong_config = _snapshot(root, "wrong-config", preset("tiny", n_kv_heads=2), 14, 3, bf16)
    (wrong_config / CONFIG_NAME).write_text(json.dumps(preset("tiny").to_hf_config(), indent=2))
    missing = _snapshot(root, "missing", preset("tiny"), 15, 3, bf16)
    _drop_tensor(missing, "model.transformer.ln_f.weight")
    extra = _snapshot(root, "extra", preset("tiny", n_layers=3), 16, 3, bf16)
    (extra / CONFIG_NAME).write_text(json.dumps(preset("tiny").to_hf_config(), indent=2))
    broken = [
        (
            "config.json says 4 key/value heads, the shards hold 2: every k_proj and v_proj has "
            "the wrong shape",
            wrong_config,
            llada,
        ),
        (
            "model.transformer.ln_f.weight is in no shard (and not in the index)",
            missing,
            llada,
        ),
        (
            "config.json says 2 blocks, the shards hold 3: block 2's tensors fit no parameter",
            extra,
            llada,
        ),
    ]
    return good, broken


def _load_reference(folder: Path, model_key: Callable) -> LLaDAModel:
    return load_hf_checkpoint(folder)


def _compare_loaded(expected: LLaDAModel, got: Any) -> None:
    if not isinstance(got, torch.nn.Module):
        raise ExerciseFailed(
            f"expected the loaded model (an LLaDAModel), got {type(got).__name__}: "
            f"{short_repr(got)}"
        )
    want, found = expected.state_dict(), got.state_dict()
    still_meta = [k for k, v in found.items() if v.is_meta]
    if still_meta:
        raise ExerciseFailed(
            f"expected every parameter filled from the snapshot, but {len(still_meta)} of the "
            f"model's {len(found)} tensors are still on the meta device, e.g. {still_meta[:2]}. "
            "Every shard the index names holds some of the weights, and a loader that leaves a "
            "parameter unfilled must say so."
        )
    missing, extra = sorted(set(want) - set(found)), sorted(set(found) - set(want))
    if missing or extra:
        raise ExerciseFailed(
            f"the model's keys differ from the library's: missing {missing[:3]}, unexpected "
            f"{extra[:3]}; build the model from the snapshot's config.json"
        )
    for key, e in want.items():
        g = found[key]
        if tuple(g.shape) != tuple(e.shape):
            hint = (
                ": the same sizes in reverse. The file stores a linear layer's weight as "
                "[out_features, in_features], the layout nn.Linear itself uses; keep it as stored"
                if tuple(g.shape) == tuple(e.shape)[::-1]
                else ""
            )
            raise ExerciseFailed(
                f"{key}: expected shape {tuple(e.shape)}, got {tuple(g.shape)}{hint}"
            )
        if g.dtype != e.dtype:
            raise ExerciseFailed(
                f"{key}: expected dtype {e.dtype}, the one stored in the file, got {g.dtype}; "
                "a loader returns the weights as stored (converting is a separate choice)"
            )
        if not torch.equal(g, e):
            raise ExerciseFailed(
                f"{key}: expected the values of the snapshot's tensor for this parameter, got "
                "others. Was it filled from another tensor of the same shape (check the name each "
                "key maps to) or changed on the way?"
            )


def check_load_snapshot(fn: Callable) -> CheckResult:
    """Exercise 5.4: fn(folder, model_key) -> the LLaDAModel of a sharded snapshot, every tensor
    as stored; an error (any exception) for a snapshot that does not fit its config.json."""
    with tempfile.TemporaryDirectory() as tmp:
        good, broken = _snapshot_cases(Path(tmp))
        passed = check(
            "Exercise 5.4",
            fn,
            _load_reference,
            good,
            "minillada.checkpoints.hf.load_hf_checkpoint",
            compare=_compare_loaded,
        )
        if not passed:
            return passed
        for description, folder, model_key in broken:
            try:
                fn(folder, model_key)
            except Exception:  # any clear refusal will do; the library raises HFCheckpointError
                continue
            raise ExerciseFailed(
                f"Exercise 5.4: {description}: expected an error, but your function returned a "
                "model. A snapshot that does not fit its config.json must be refused before it "
                "is used: compare every tensor with the parameter it fills, and every parameter "
                "with what the snapshot held."
            )
    print(
        f"  ... and it refuses all {len(broken)} broken snapshots (a wrong shape, a missing "
        "tensor, a tensor the model does not have)."
    )
    return passed


# --- Exercise 5.5: an experiment on the number of key/value heads --------------------------------

KV_HEADS = (32, 16, 8, 4, 2, 1)


def _kv_heads_outcome(h: int) -> tuple[int, int]:
    config = preset("llada_8b", n_kv_heads=h)
    return count_parameters(config).total, kv_bytes_per_token(config)


def _kv_bytes_hint(expected: int, got: int, n_layers: int) -> str:
    if 2 * got == expected:
        return "Half of it: a token leaves both its key and its value in every layer."
    if got == 2 * expected:
        return "Twice as much: in bf16 a value takes 2 bytes."
    if got * n_layers == expected:
        return f"One layer's worth: each of the {n_layers} blocks keeps its own keys and values."
    return (
        "Read the number of key and value features from the shapes of each block's k_proj and "
        "v_proj, and count 2 bytes per value (bf16)."
    )


def check_kv_heads_experiment(fn: Callable) -> CheckResult:
    """Exercise 5.5: fn(kv_heads) -> {h: (parameters, bytes of keys and values per token in bf16)}
    of LLaDA-8B with n_kv_heads=h, measured on the meta device; then what the numbers show. The
    library's count_parameters and kv_bytes_per_token are refused while fn runs: they would answer
    the question without measuring."""
    with forbidden(count_parameters, kv_bytes_per_token):
        got = run_experiment("Exercise 5.5", fn, list(KV_HEADS))
    if got is None:
        return CheckResult(False)
    n_layers = preset("llada_8b").n_layers
    params, kv = {}, {}
    for h in KV_HEADS:
        expected_params, expected_kv = _kv_heads_outcome(h)
        try:
            params[h], kv[h] = (int(v) for v in got[h])
        except (TypeError, ValueError):
            raise ExerciseFailed(
                f"Exercise 5.5: n_kv_heads={h}: expected a pair (parameters, bytes of keys and "
                f"values per token), got {short_repr(got[h])}"
            ) from None
        if params[h] != expected_params:
            same = " (LLaDA-8B's own count: was n_kv_heads changed?)"
            raise ExerciseFailed(
                f"Exercise 5.5: n_kv_heads={h}: expected {expected_params:,} parameters, got "
                f"{params[h]:,}{same if params[h] == _kv_heads_outcome(32)[0] else ''}. Count "
                "every parameter of the model built with this n_kv_heads and nothing else changed."
            )
        if kv[h] != expected_kv:
            raise ExerciseFailed(
                f"Exercise 5.5: n_kv_heads={h}: expected {expected_kv:,} bytes of keys and values "
                f"per token, got {kv[h]:,}. {_kv_bytes_hint(expected_kv, kv[h], n_layers)}"
            )
    most, least = KV_HEADS[0], KV_HEADS[-1]
    pairs = list(zip(KV_HEADS[:-1], KV_HEADS[1:], strict=True))
    steps = {(params[a] - params[b]) // (a - b) for a, b in pairs}
    linear = len(steps) == 1 and all((params[a] - params[b]) % (a - b) == 0 for a, b in pairs)
    print(
        f"Exercise 5.5 passed: {len(KV_HEADS)} settings of n_kv_heads agree with count_parameters "
        "and kv_bytes_per_token."
    )
    if linear:
        step = steps.pop()
        print(
            f"  parameters fall linearly, {step:,} per key/value head (its rows of k_proj and "
            f"v_proj in all {n_layers} blocks): {params[most]:,} with {most} heads, "
            f"{params[least]:,} with {least}, {1 - params[least] / params[most]:.1%} fewer;"
        )
    else:
        print(f"  parameters from {params[most]:,} ({most} heads) to {params[least]:,} ({least});")
    proportional = all(kv[h] * most == kv[most] * h for h in KV_HEADS)
    how = "in proportion to the heads" if proportional else "with the heads"
    print(
        f"  keys and values per token fall {how}: {kv[most] // 1024} KiB with {most} heads, "
        f"{kv[least] // 1024} KiB with {least}, {kv[most] // kv[least]}x less;"
    )
    print(
        f"  LLaDA-8B with iLLaDA's 8 heads: {1 - params[8] / params[most]:.1%} fewer parameters, "
        f"{kv[most] // kv[8]}x fewer bytes of keys and values per token: a modest saving in "
        "weights, a large one in any cache of keys and values."
    )
    return CheckResult(True)


# --- Exercise 5.6: iLLaDA's names ----------------------------------------------------------------


def _illada_key(llada_key: str) -> str:
    return DIALECTS["illada"].to_released_key(llada_key)


def check_illada_key(fn: Callable) -> CheckResult:
    """Exercise 5.6: fn(LLaDA key) -> the name of the same tensor in an iLLaDA snapshot."""
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
        "Exercise 5.6",
        fn,
        _illada_key,
        cases,
        "minillada.checkpoints.dialects.DIALECTS['illada'].to_released_key",
    )
