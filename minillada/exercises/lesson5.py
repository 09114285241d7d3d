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


# --- Exercise 5.2: the architecture, read off the names and shapes -------------------------------

CONFIG_FIELDS = (
    "d_model", "n_heads", "n_layers", "hidden_size", "vocab_rows", "kv_heads", "weight_tying",
)  # fmt: skip


def checkpoint_shapes(config: LLaDAConfig, seed: int) -> dict[str, tuple[int, ...]]:
    """{key: shape} of every tensor of LLaDAModel(config) in LLaDA's layout, in a shuffled order
    (a loader must not rely on the order of a file's header)."""
    state = LLaDAModel(config, device="meta").state_dict()
    order = torch.randperm(len(state), generator=seeded(seed)).tolist()
    keys = list(state)
    return {keys[i]: tuple(state[keys[i]].shape) for i in order}


def _config_fields(config: LLaDAConfig) -> dict[str, Any]:
    return {
        "d_model": config.d_model,
        "n_heads": config.n_heads,
        "n_layers": config.n_layers,
        "hidden_size": config.hidden_size,
        "vocab_rows": config.vocab_rows,
        "kv_heads": config.kv_heads,
        "weight_tying": config.weight_tying,
    }


_FIELD_HINTS = {
    "n_layers": "Count the distinct block numbers (blocks 0 .. n-1; as strings, '10' sorts "
    "before '2').",
    "hidden_size": "The MLP width is the number of rows of a block's ff_proj (the top-level ff_out "
    "is the output head, V x D).",
    "kv_heads": "k_proj has n_kv_heads * head_dim output rows (nn.Linear stores (out, in)); with "
    "grouped-query attention that is fewer than q_proj's.",
    "weight_tying": "A tied model computes its logits with the embedding itself and stores no "
    "model.transformer.ff_out.weight.",
    "vocab_rows": "The embedding wte has one row per id: (V, D).",
    "d_model": "Every norm's scale has d_model entries; ln_f is one of them.",
    "n_heads": "The query heads are d_model // head_dim.",
}


def _compare_config_fields(expected: dict[str, Any], got: Any) -> None:
    if not isinstance(got, dict) or sorted(got) != sorted(expected):
        raise ExerciseFailed(
            f"expected a dict with the keys {list(expected)}, got {short_repr(got)}"
        )
    for name, value in expected.items():
        found = got[name]
        same = (
            bool(found) == value and isinstance(found, (bool, int))
            if isinstance(value, bool)
            else isinstance(found, int) and not isinstance(found, bool) and found == value
        )
        if not same:
            raise ExerciseFailed(f"{name}: expected {value!r}, got {found!r}. {_FIELD_HINTS[name]}")


def check_config_from_shapes(fn: Callable) -> CheckResult:
    """Exercise 5.2: fn(shapes, head_dim) -> the architecture (d_model, n_heads, n_layers,
    hidden_size, vocab_rows, kv_heads, weight_tying) of the checkpoint whose tensors have
    ``shapes`` ({LLaDA-layout key: shape}, in no particular order)."""
    configs = [
        ("LLaDA-8B's 291 tensors", preset("llada_8b")),
        ("the 'tiny' preset", preset("tiny")),
        (
            "grouped-query attention: LLaDA-8B with 8 key/value heads for 32 query heads",
            preset("llada_8b", n_kv_heads=8),
        ),
        (
            "iLLaDA-8B: a tied head, so no model.transformer.ff_out.weight at all",
            preset("illada_8b"),
        ),
        ("12 blocks: a block number has two digits", preset("tiny", n_layers=12)),
        (
            "a block's ff_out is the MLP's down projection (D x F), the top-level one the head",
            preset("tiny", mlp_hidden_size=96, n_kv_heads=1),
        ),
    ]
    cases = [
        Case(f"{what} (head_dim {config.head_dim})", (config, seed))
        for seed, (what, config) in enumerate(configs)
    ]

    def from_shapes(config, seed):  # the learner sees the shapes only
        return fn(checkpoint_shapes(config, seed), config.head_dim)

    def reference(config, seed):  # the config the shapes were built from
        return _config_fields(config)

    return check(
        "Exercise 5.2",
        from_shapes,
        reference,
        cases,
        "the config the checkpoint was built from",
        compare=_compare_config_fields,
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
    of LLaDA-8B with n_kv_heads=h, measured on the meta device; prints the measurement (what it
    shows is the lesson's discussion, not the checker's). The library's count_parameters and
    kv_bytes_per_token are refused while fn runs: they would answer the question without
    measuring."""
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
    print(
        f"Exercise 5.5 passed: {len(KV_HEADS)} settings of n_kv_heads agree with count_parameters "
        "and kv_bytes_per_token."
    )
    most = KV_HEADS[0]
    print(
        f"  {'n_kv_heads':>10}{'parameters':>16}{'of ' + str(most) + ' heads':>13}"
        f"{'fewer per head removed':>24}{'keys + values per token':>25}"
    )
    for previous, h in zip((None, *KV_HEADS[:-1]), KV_HEADS, strict=True):
        fewer = None if previous is None else (params[previous] - params[h]) // (previous - h)
        per_head = "" if fewer is None else f"{fewer:,}"
        print(
            f"  {h:>10}{params[h]:>16,}{params[h] / params[most]:>13.1%}{per_head:>24}"
            f"{kv[h]:>16,} bytes{kv[h] / kv[most]:>7.1%}"
        )
    return CheckResult(True)
