"""Checkpoints as a folder of safetensors plus JSON: weights, config, tokenizer and, for resuming,
the optimizer and generator state. Never pickle: a safetensors file holds only tensors, so loading
one cannot run code.

Layout of a checkpoint folder::

    config.json             model class + config, tokenizer, training metadata
    model.safetensors       parameters
    optimizer.safetensors   (optional) optimizer moments and the data/noise generator state
    trainer_state.json      (optional) optimizer hyper-parameters, iteration number, history
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from minillada.char_data import CharTokenizer
from minillada.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.training import TrainState

FORMAT = "minillada-checkpoint"
MODEL_CLASSES: dict[str, tuple[type[torch.nn.Module], type]] = {
    "TinyTransformer": (TinyTransformer, TinyTransformerConfig),
}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, or does not fit the model."""


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError unless ``state`` has exactly the model's keys and shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"missing key {k} {expected[k]}" for k in sorted(expected.keys() - found.keys())]
    problems += [f"unexpected key {k} {found[k]}" for k in sorted(found.keys() - expected.keys())]
    problems += [
        f"{k}: checkpoint has shape {found[k]}, model expects {expected[k]}"
        for k in sorted(expected.keys() & found.keys())
        if expected[k] != found[k]
    ]
    if problems:
        shown = "\n  ".join(problems[:8]) + (
            f"\n  ... and {len(problems) - 8} more" if len(problems) > 8 else ""
        )
        raise CheckpointError(
            f"The weights in {source} do not match the model ({len(problems)} problem(s)):\n  "
            f"{shown}\n"
            f"The checkpoint's config.json must describe the same architecture as the model you "
            f"load it "
            f"into; build the model from that config (minillada.checkpoint.load_checkpoint does)."
        )


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    tokenizer: CharTokenizer | None = None,
    state: TrainState | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (and optionally the training state, for resuming) to the folder ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "version": 1,
        "model_class": type(model).__name__,
        "model": asdict(model.config),
        "tokenizer": tokenizer.to_dict() if tokenizer is not None else None,
        **(extra or {}),
    }
    (path / "config.json").write_text(json.dumps(config, indent=1))
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    if state is not None:
        tensors, opt_meta = flatten_optimizer_state(state.optimizer.state_dict())
        tensors["generator_state"] = state.generator.get_state()
        save_file(tensors, str(path / "optimizer.safetensors"))
        trainer = {"iter_num": state.iter_num, "optimizer": opt_meta, "history": state.history}
        (path / "trainer_state.json").write_text(json.dumps(trainer))
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"{path} is not a minillada checkpoint: no config.json there. "
            f"Expected a folder written by minillada.checkpoint.save_checkpoint."
        )
    config = json.loads(config_file.read_text())
    if config.get("format") != FORMAT:
        raise CheckpointError(
            f"{config_file} is not a minillada checkpoint config (format={config.get('format')!r})."
        )
    return config


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load ``path/model.safetensors`` into an existing model, checking every key and shape
    first."""
    weights_file = Path(path) / "model.safetensors"
    if not weights_file.is_file():
        raise CheckpointError(f"No model.safetensors in {path}.")
    device = next(model.parameters()).device
    state = load_file(str(weights_file), device=str(device))
    check_state_dict(model, state, str(weights_file))
    model.load_state_dict(state)
    return model


def load_checkpoint(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, CharTokenizer | None, dict[str, Any]]:
    """Build the model described by ``path/config.json``, load its weights: (model, tokenizer,
    config)."""
    config = read_config(path)
    name = config["model_class"]
    if name not in MODEL_CLASSES:
        raise CheckpointError(
            f"Unknown model_class {name!r} in {path}; known: {sorted(MODEL_CLASSES)}."
        )
    model_cls, config_cls = MODEL_CLASSES[name]
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(config["model"]) - known)
    if unknown:
        raise CheckpointError(
            f"{path}/config.json has fields {unknown} that {config_cls.__name__} lacks."
        )
    model = model_cls(config_cls(**config["model"])).to(device)
    load_weights(model, path)
    model.eval()
    tok = CharTokenizer.from_dict(config["tokenizer"]) if config.get("tokenizer") else None
    return model, tok, config


def load_train_state(path: str | Path, state: TrainState) -> TrainState:
    """Fill a fresh TrainState (same model, same TrainConfig) from a checkpoint, to resume
    training."""
    path = Path(path)
    if not (path / "optimizer.safetensors").is_file():
        raise CheckpointError(
            f"{path} has no optimizer.safetensors: it was saved without state=..."
        )
    tensors = load_file(str(path / "optimizer.safetensors"))
    trainer = json.loads((path / "trainer_state.json").read_text())
    state.generator.set_state(tensors.pop("generator_state"))
    # Which AdamW kernel runs (fused, multi-tensor) belongs to this machine, not to the one that
    # saved the checkpoint: keep the fresh optimizer's choice.
    kernels = [
        {k: g[k] for k in ("fused", "foreach") if k in g} for g in state.optimizer.param_groups
    ]
    state.optimizer.load_state_dict(unflatten_optimizer_state(tensors, trainer["optimizer"]))
    for group, kernel in zip(state.optimizer.param_groups, kernels, strict=True):
        group.update(kernel)
    state.iter_num = trainer["iter_num"]
    state.history = trainer["history"]
    return state


def flatten_optimizer_state(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state_dict as (tensors for safetensors, JSON-able metadata): no pickle."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in sd["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The inverse of flatten_optimizer_state: a state_dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}
