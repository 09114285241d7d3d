"""The Hugging Face snapshot format of the released weights (LLaDA-8B and iLLaDA-8B): load it,
and write it.

A snapshot folder (what ``huggingface-cli download GSAI-ML/iLLaDA-8B-Instruct --local-dir DIR``
leaves) holds::

    config.json                        the architecture, in the snapshot's dialect
    model.safetensors.index.json       {"metadata": {"total_size": N}, "weight_map": {key: file}}
    model-0000i-of-0000n.safetensors   the tensors, split into n shards (5 digits each)
    ...

or, for a small model, a single ``model.safetensors`` and no index. LLaDA's and iLLaDA's snapshots
name their config fields and tensors differently; ``minillada.checkpoints.dialects`` holds one
explicit table per dialect, chosen from config.json's ``model_type``. (This is separate from the
lesson-1 format of ``minillada.checkpoints.folder``.)

Loading is careful and frugal: every header is checked first (keys, shapes, dtypes; nothing is read
yet), the model is built on the meta device (no memory), and then the shards are streamed one at a
time, tensor by tensor, straight to the target device and dtype, so host memory never holds more
than about one shard on top of what the weights themselves need.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from minillada.checkpoints.dialects import DIALECTS, Dialect, dialect_of
from minillada.data.tokenizer import TokenizerFilesError, read_special_token_ids
from minillada.models.llada import LLaDAConfig, LLaDAModel

CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


def shard_name(i: int, n: int) -> str:
    """Released shard naming, 1-based, five digits each: shard 1 of 6 is "model-", 00001, "-of-",
    00006, ".safetensors". Code never spells a shard's name out: it calls this or reads the
    index, since shard counts differ from model to model."""
    return f"model-{i:05d}-of-{n:05d}.safetensors"


# LLaDA's name table (the identity: LLaDAModel uses the released names); iLLaDA's is in dialects.
NAME_MAP: dict[str, str] = DIALECTS["llada"].names


def hf_to_model_key(key: str, dialect: str = "llada") -> str | None:
    """The LLaDAModel parameter a released key fills, or None if the table has no rule for it."""
    return DIALECTS[dialect].to_model_key(key)


def model_to_hf_key(key: str, dialect: str = "llada") -> str:
    """The released key under which a LLaDAModel parameter is saved."""
    return DIALECTS[dialect].to_released_key(key)


_EMBEDDING = "model.transformer.wte.weight"
_HEAD_PARAM = "model.transformer.ff_out.weight"
_TIED_HEAD = _HEAD_PARAM  # where a stored copy of a tied head maps (not a parameter of the model)


class HFCheckpointError(RuntimeError):
    """A snapshot folder is incomplete, malformed, or does not fit the model."""


_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# --------------------------------------------------------------------------------------------------
# Reading a snapshot
# --------------------------------------------------------------------------------------------------


def _not_a_snapshot(folder: Path, why: str) -> HFCheckpointError:
    found = sorted(p.name for p in folder.iterdir())[:12] if folder.is_dir() else []
    hint = ""
    if (folder / "snapshots").is_dir():
        hint = (
            " This looks like a Hugging Face cache folder (models--...); pass the folder inside "
            f"{folder / 'snapshots'} (one per revision) instead."
        )
    elif (folder / CONFIG_NAME).is_file() and '"minillada-checkpoint"' in (
        folder / CONFIG_NAME
    ).read_text(errors="replace"):
        hint = (
            " It is a lesson-1 minillada checkpoint: load it with "
            "minillada.checkpoints.folder.load_checkpoint instead."
        )
    return HFCheckpointError(
        f"{folder} is not a Hugging Face snapshot folder: {why}. Expected {CONFIG_NAME} plus "
        f"either {INDEX_NAME} with its model-0000N-of-0000M.safetensors shards, or a single "
        f"{SINGLE_NAME}; found {found or 'nothing'}.{hint} Download one with "
        f"`huggingface-cli download GSAI-ML/LLaDA-8B-Instruct --local-dir DIR` "
        f"(or write one with save_hf_checkpoint)."
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise HFCheckpointError(
            f"{path} is not valid JSON ({e}); re-download or re-write it."
        ) from e


def read_hf_config(folder: str | Path) -> LLaDAConfig:
    """The LLaDAConfig of a snapshot folder's config.json, in either dialect (its ``dialect``
    field says which)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise _not_a_snapshot(folder, "the folder does not exist")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise _not_a_snapshot(folder, f"there is no {CONFIG_NAME}")
    raw = _read_json(path)
    if not isinstance(raw, dict) or raw.get("format") == "minillada-checkpoint":
        raise _not_a_snapshot(folder, f"{CONFIG_NAME} is not a Hugging Face model config")
    try:
        return dialect_of(raw).read_config(raw)
    except (ValueError, TypeError) as e:
        raise HFCheckpointError(f"config mismatch in {path}: {e}") from e


def read_weight_map(folder: str | Path) -> dict[str, str]:
    """key -> shard file name, from the index, or from the single model.safetensors."""
    folder = Path(folder)
    index, single = folder / INDEX_NAME, folder / SINGLE_NAME
    if index.is_file():
        raw = _read_json(index)
        if not isinstance(raw, dict) or not isinstance(raw.get("weight_map"), dict):
            raise HFCheckpointError(
                f"{index} has no 'weight_map' object; expected "
                f'{{"metadata": {{"total_size": ...}}, "weight_map": {{key: file, ...}}}}.'
            )
        return dict(raw["weight_map"])
    if single.is_file():
        with safe_open(single, framework="pt") as f:
            return {k: SINGLE_NAME for k in f.keys()}
    raise _not_a_snapshot(folder, f"there is neither {INDEX_NAME} nor {SINGLE_NAME}")


def _headers(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """key -> (shape, dtype string) from a safetensors header, without reading any tensor."""
    try:
        with safe_open(path, framework="pt") as f:
            return {
                k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()
            }
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise HFCheckpointError(f"{path} is not a readable safetensors file ({e}).") from e


def check_snapshot(
    folder: str | Path,
    model: nn.Module,
    checkpoint_dtype: torch.dtype | None = None,
    dialect: str | None = None,
) -> tuple[dict[str, list[str]], torch.dtype]:
    """Check every key, shape and dtype of a snapshot against ``model`` from the headers alone.

    Returns the plan (shard file -> released keys, in file order, the shard holding the embedding
    first) and the checkpoint's dtype. Raises HFCheckpointError naming the file and tensor for a
    missing shard, a key the model does not know, a missing key (an untied config with no head
    tensor among them), a wrong shape or a wrong dtype. ``dialect``: the name table to use
    (default: the model config's).
    """
    folder = Path(folder)
    names = DIALECTS[dialect or model.config.dialect]
    weight_map = read_weight_map(folder)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = bool(getattr(model.config, "weight_tying", False))
    if tied:  # a stored head is allowed: it must have the embedding's shape (and, later, values)
        expected[_TIED_HEAD] = expected[_EMBEDDING]

    by_file: dict[str, list[str]] = {}
    for key, fname in weight_map.items():
        by_file.setdefault(fname, []).append(key)
    for fname, keys in by_file.items():
        if not (folder / fname).is_file():
            raise HFCheckpointError(
                f"Missing shard: the index {folder / INDEX_NAME} puts {len(keys)} tensor(s) "
                f"(e.g. {keys[0]}) in {folder / fname}, which does not exist. "
                f"The download is incomplete; download that file again."
            )

    # every key used: each key must map onto a parameter the model has
    layers = "n_layers" if names.name == "llada" else "num_hidden_layers"
    for key, fname in sorted(weight_map.items()):
        target = names.to_model_key(key)
        if target is None:
            why = f"no rule in the {names.name} name table matches it"
        elif target not in expected:
            why = f"it would fill {target!r}, which the model built from config.json does not have"
        else:
            continue
        raise HFCheckpointError(
            f"Unknown key {key!r} in {folder / fname}: {why}. Either the checkpoint is not a "
            f"{names.name} model, or its config.json does not describe it (check {layers} and "
            "whether the head is tied)."
        )
    # every parameter filled: each model parameter must come from some key
    filled = {names.to_model_key(k) for k in weight_map}
    missing = sorted(set(expected) - filled - ({_TIED_HEAD} if tied else set()))
    if _HEAD_PARAM in missing:
        raise HFCheckpointError(
            f"Missing key: config.json in {folder} says the output head is untied, but the "
            f"snapshot has no {names.head_key!r}. Either the head is tied (then config.json must "
            "say so: tie_word_embeddings / weight_tying true) or the download is incomplete."
        )
    if missing:
        raise HFCheckpointError(
            f"Missing key: the snapshot {folder} has no tensor for {len(missing)} model "
            f"parameter(s), e.g. {names.to_released_key(missing[0])!r} {expected[missing[0]]}. "
            "The checkpoint is incomplete or config.json describes a bigger model than the weights."
        )

    plan: dict[str, list[str]] = {}
    headers = {fname: _headers(folder / fname) for fname in sorted(by_file)}
    # the checkpoint's dtype: the one asked for, else the one most of its tensors have
    counts = Counter(dt for header in headers.values() for _, dt in header.values())
    file_dtype = checkpoint_dtype or _DTYPES.get(counts.most_common(1)[0][0], torch.float32)
    for fname, header in headers.items():
        absent = sorted(set(by_file[fname]) - set(header))
        if absent:
            path = folder / fname
            raise HFCheckpointError(
                f"Missing key: the index says {absent[0]!r} is in {path}, but that file does not "
                f"contain it ({len(absent)} such tensor(s)). Re-download the shard or the index."
            )
    for fname, header in headers.items():
        path, listed = folder / fname, set(by_file[fname])
        extra = sorted(set(header) - listed)
        if extra:
            raise HFCheckpointError(
                f"Unknown key {extra[0]!r} in {path}: the file holds it but the index does not "
                f"list it ({len(extra)} such tensor(s)); every tensor must be used. The index and "
                f"the shards come from different checkpoints; re-download them together."
            )
        for key in (k for k in header if k in listed):  # file order: sequential reads
            shape, dt = header[key]
            want = expected[names.to_model_key(key)]
            if shape != want:
                raise HFCheckpointError(
                    f"Wrong shape for {key!r} in {path}: the file has {list(shape)}, the model "
                    f"built from config.json expects {list(want)}. config.json does not match the "
                    f"weights; use the config.json that came with them."
                )
            dtype = _DTYPES.get(dt)
            if dtype not in _FLOAT_DTYPES:
                raise HFCheckpointError(
                    f"Wrong dtype for {key!r} in {path}: {dt}, but model weights must be "
                    f"floating point (BF16, F16 or F32). This file does not hold LLaDA weights."
                )
            if dtype != file_dtype:
                fix = (
                    "(checkpoint_dtype); pass checkpoint_dtype=None to accept any floating dtype."
                    if checkpoint_dtype is not None
                    else "like the checkpoint's other weights; a checkpoint stores all its weights "
                    "in one dtype. Re-save it with save_hf_checkpoint(..., dtype=...)."
                )
                raise HFCheckpointError(
                    f"Wrong dtype for {key!r} in {path}: {dt}, expected {file_dtype} {fix}"
                )
            plan.setdefault(fname, []).append(key)
    # the shard with the embedding first, so that a stored tied head is checked the moment it is
    # read and never held in memory beside a later shard
    first = [f for f, ks in plan.items() if any(names.to_model_key(k) == _EMBEDDING for k in ks)]
    plan = {f: plan[f] for f in first + [f for f in plan if f not in first]}
    return plan, file_dtype


def _safetensors_device(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def load_hf_checkpoint(
    folder: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    config: LLaDAConfig | None = None,
    checkpoint_dtype: torch.dtype | None = None,
    mask_id: int | None = None,
) -> LLaDAModel:
    """Load a snapshot folder (LLaDA or iLLaDA dialect) into a LLaDAModel on ``device``, in
    ``dtype`` (default: the file's).

    ``mask_id``: the diffusion mask's id when the tokenizer files do not name the mask (checked
    against them when they do).

    ``config``: if given, config.json must describe the same architecture (else HFCheckpointError).
    ``checkpoint_dtype``: if given, every tensor in the files must have this dtype (e.g.
    torch.bfloat16 for the released weights). When the folder also holds tokenizer files, the
    model's special ids (the mask id above all) are taken from them where config.json has none,
    and must agree with config.json where it has them. A stored copy of a tied head must equal the
    embedding.
    """
    folder = Path(folder)
    file_config = read_hf_config(folder)
    if config is not None:
        diff = config.differences(file_config)
        if diff:
            raise HFCheckpointError(
                f"config mismatch: the config you passed and {folder / CONFIG_NAME} differ in "
                + "; ".join(diff)
                + " (yours vs the file's). Load without config= to use the file's."
            )
        file_config = replace(
            config, hf_extra=dict(file_config.hf_extra), dialect=file_config.dialect
        )
    file_config = _with_tokenizer_ids(folder, file_config, mask_id)
    model = LLaDAModel(file_config, device="meta")  # no memory yet
    names = DIALECTS[file_config.dialect]
    plan, file_dtype = check_snapshot(folder, model, checkpoint_dtype)

    device = torch.device(device)
    target_dtype = dtype or file_dtype
    # On the CPU, get_tensor returns a view of the memory-mapped shard; copying it gives the model
    # memory of its own (the files may be overwritten later) and lets the shard's pages go when the
    # file is closed. On a GPU the tensor is already a fresh copy on the device.
    copy = device.type == "cpu"
    tied = file_config.weight_tying
    stored_head: tuple[str, Path, torch.Tensor] | None = None  # a tied head read before wte
    for fname, keys in plan.items():  # one shard open at a time, the embedding's first
        with safe_open(folder / fname, framework="pt", device=_safetensors_device(device)) as f:
            for key in keys:
                tensor = f.get_tensor(key).to(target_dtype, copy=copy)
                target = names.to_model_key(key)
                if tied and target == _TIED_HEAD:
                    stored_head = (key, folder / fname, tensor)
                else:
                    _assign(model, target, tensor)
                if stored_head is not None and not model.transformer.wte.weight.is_meta:
                    _check_tied_head(model, *stored_head, names)
                    stored_head = None
    unfilled = [n for n, p in model.named_parameters() if p.is_meta]
    if unfilled:  # cannot happen after check_snapshot; kept as the loader's own guarantee
        raise HFCheckpointError(f"Parameters left unfilled after loading {folder}: {unfilled[:5]}.")
    return model.eval()


def _check_tied_head(
    model: LLaDAModel, key: str, path: Path, head: torch.Tensor, names: Dialect
) -> None:
    """A tied config with a stored head: the stored head must be the embedding, value for value."""
    embedding = model.transformer.wte.weight
    if not torch.equal(head, embedding):
        diff = (head.float() - embedding.float()).abs().max().item()
        raise HFCheckpointError(
            f"{path}: config.json ties the output head to the embedding, but the stored {key!r} "
            f"differs from {names.to_released_key(_EMBEDDING)!r} (max |difference| {diff:.3g}). "
            "Either the config should say the head is untied (tie_word_embeddings false) or the "
            "shards come from different checkpoints."
        )


def _with_tokenizer_ids(
    folder: Path, config: LLaDAConfig, mask_id: int | None = None
) -> LLaDAConfig:
    """Fill the special ids config.json lacks from the folder's tokenizer files; refuse a
    contradiction between the two. A config.json whose ``eos_token_id`` is a list (kept whole in
    ``hf_extra["eos_token_ids"]``) agrees when the tokenizer's EOS is in it."""
    if not (folder / "tokenizer_config.json").is_file():
        return config
    try:
        special = read_special_token_ids(folder, mask_id=mask_id)
    except TokenizerFilesError as err:
        raise HFCheckpointError(f"The tokenizer files in {folder} cannot be read: {err}") from err
    updates = {}
    for field_name, value in (
        ("mask_token_id", special.mask),
        ("eos_token_id", special.eos),
        ("pad_token_id", special.pad),
    ):
        ours = getattr(config, field_name)
        listed = config.hf_extra.get("eos_token_ids") if field_name == "eos_token_id" else None
        if ours is None or (listed and value in listed):
            updates[field_name] = value
        elif value is not None and ours != value:
            raise HFCheckpointError(
                f"{folder / CONFIG_NAME} says {field_name}={ours} but the tokenizer files in the "
                f"same folder say {value}: the files come from different models. Use one "
                "snapshot's files together."
            )
    return replace(config, **updates) if updates else config


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replace the (meta) parameter ``name`` by ``tensor``, keeping its requires_grad."""
    module_name, _, pname = name.rpartition(".")
    module = model.get_submodule(module_name)
    old = module._parameters[pname]
    assert old is not None
    setattr(module, pname, nn.Parameter(tensor, requires_grad=old.requires_grad))


# --------------------------------------------------------------------------------------------------
# Writing a snapshot
# --------------------------------------------------------------------------------------------------


def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)\s*", size)
    if not m:
        raise ValueError(f"Cannot read the size {size!r}; write it like '5GB', '500MB' or 1000000.")
    unit = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    return int(float(m.group(1)) * unit[m.group(2)])


def save_hf_checkpoint(
    model: LLaDAModel,
    folder: str | Path,
    num_shards: int | None = None,
    max_shard_size: int | str = "5GB",
    dtype: torch.dtype | None = None,
    dialect: str | None = None,
    store_tied_head: bool = False,
) -> Path:
    """Write ``model`` as a snapshot folder in a released layout: config.json + shards + index.

    ``dialect``: "llada" (OLMo-style names) or "illada" (Llama-style names); default the model
    config's. ``store_tied_head``: for a tied model, also store the head as a tensor of its own (a
    copy of the embedding), since whether the iLLaDA release does is not known; the loader accepts
    both. ``num_shards`` fixes the number of shards (the released LLaDA-8B has 6); otherwise as
    many shards as ``max_shard_size`` needs. One shard is written as a single model.safetensors
    with no index, as Hugging Face does. Tensors are spread over shards largest first, each to the
    lightest shard, so shard sizes come out even. ``dtype`` converts on the way (e.g.
    torch.bfloat16); one shard is in host memory at a time.
    """
    names = DIALECTS[dialect or model.config.dialect]
    config_json = names.write_config(model.config)  # refuses a config the dialect cannot hold
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = dict(model.state_dict())
    if model.config.weight_tying and store_tied_head:
        state[_TIED_HEAD] = state[_EMBEDDING]  # written as a copy of its own below
    itemsize = {k: (dtype or v.dtype).itemsize for k, v in state.items()}
    nbytes = {k: v.numel() * itemsize[k] for k, v in state.items()}
    total = sum(nbytes.values())
    n = (
        num_shards
        if num_shards is not None
        else max(1, math.ceil(total / _parse_size(max_shard_size)))
    )
    if not 1 <= n <= len(state):
        raise ValueError(f"num_shards must be between 1 and {len(state)} tensors, got {n}.")

    loads, groups = [0] * n, [[] for _ in range(n)]
    for key in sorted(state, key=lambda k: -nbytes[k]):
        i = loads.index(min(loads))
        groups[i].append(key)
        loads[i] += nbytes[key]
    order = {k: i for i, k in enumerate(state)}
    files = [SINGLE_NAME] if n == 1 else [shard_name(i + 1, n) for i in range(n)]
    for path in [
        folder / SINGLE_NAME,
        folder / INDEX_NAME,
        *folder.glob("model-*-of-*.safetensors"),
    ]:
        path.unlink(missing_ok=True)  # never leave a mix of an old and a new checkpoint

    weight_map: dict[str, str] = {}
    for name, group in zip(files, groups, strict=True):
        tensors = {}
        for k in sorted(group, key=order.__getitem__):
            tensor = state[k].detach().to("cpu", dtype or state[k].dtype).contiguous()
            # safetensors refuses two names for one storage: the stored tied head is a copy
            tensors[names.to_released_key(k)] = tensor.clone() if k == _TIED_HEAD else tensor
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        del tensors
    if n > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    (folder / CONFIG_NAME).write_text(json.dumps(config_json, indent=2))
    return folder
