"""Checkpoints the project trained itself and ships in data/checkpoints/ (see data/README.md)."""

from __future__ import annotations

from pathlib import Path

import torch

from minillada.char_data import CharTokenizer
from minillada.checkpoint import CheckpointError, load_checkpoint
from minillada.runtime import repo_path

CHAR_SHAKESPEARE = "char_shakespeare"  # lesson 1's model, trained longer by minillada.train_char


def shipped_checkpoint(name: str) -> Path:
    path = repo_path("data", "checkpoints", name)
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"The shipped checkpoint {name!r} is missing at data/checkpoints/{name}; it is part "
            f"of the "
            f"repository, so restore it with `git checkout -- data/checkpoints/{name}`."
        )
    return path


def load_char_shakespeare(
    device: torch.device | str = "cpu",
) -> tuple[torch.nn.Module, CharTokenizer]:
    """Lesson 1's character-level masked diffusion model, trained on Tiny Shakespeare: (model,
    tokenizer)."""
    model, tokenizer, _ = load_checkpoint(shipped_checkpoint(CHAR_SHAKESPEARE), device)
    return model, tokenizer


AR_SHAKESPEARE = "ar_shakespeare"  # lesson 3's autoregressive twin of char_shakespeare


def load_ar_shakespeare(
    device: torch.device | str = "cpu",
) -> tuple[torch.nn.Module, CharTokenizer]:
    """Lesson 3's causal twin of lesson 1's model, same budget: (model, tokenizer)."""
    model, tokenizer, _ = load_checkpoint(shipped_checkpoint(AR_SHAKESPEARE), device)
    return model, tokenizer


def load_subword_shakespeare(device: torch.device | str = "cpu"):
    """Lesson 4's subword LLaDA model with its BPE tokenizer (see minillada.subword_data)."""
    from minillada.subword_data import load_subword_shakespeare as load

    return load(device)
