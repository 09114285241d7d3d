"""minillada's own checkpoint format (lesson 1): a folder of safetensors plus JSON with the weights,
the config and the tokenizer, and, for resuming, the training state. Never pickle: a safetensors
file holds only tensors, so loading one cannot run code.

Layout of a checkpoint folder::

    config.json             model class + config, tokenizer, training metadata
    model.safetensors       parameters
    optimizer.safetensors   (optional) written by minillada.checkpoints.train_state
    trainer_state.json      (optional) likewise: iteration number, history

(The released LLaDA weights use another layout: ``minillada.checkpoints.hf``.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from minillada.checkpoints.train_state import save_train_state
from minillada.data.char import CharTokenizer
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.runtime import model_device
from minillada.training.loop import TrainState

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
            f"{shown}\nThe checkpoint's config.json must describe the same architecture as the "
            "model you load it into; build the model from that config "
            "(minillada.checkpoints.folder.load_checkpoint does)."
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
        save_train_state(path, state)
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"{path} is not a minillada checkpoint: no config.json there. "
            f"Expected a folder written by minillada.checkpoints.folder.save_checkpoint."
        )
    config = json.loads(config_file.read_text())
    if config.get("format") != FORMAT:
        raise CheckpointError(
            f"{config_file} is not a minillada checkpoint config (format={config.get('format')!r})."
        )
    return config


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load ``path/model.safetensors`` into an existing model, checking each key and shape first."""
    weights_file = Path(path) / "model.safetensors"
    if not weights_file.is_file():
        raise CheckpointError(f"No model.safetensors in {path}.")
    state = load_file(str(weights_file), device=str(model_device(model)))
    check_state_dict(model, state, str(weights_file))
    model.load_state_dict(state)
    return model


def load_checkpoint(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, CharTokenizer | None, dict[str, Any]]:
    """Build the model described by ``path/config.json`` and load its weights.

    Returns (model, tokenizer, config).
    """
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
