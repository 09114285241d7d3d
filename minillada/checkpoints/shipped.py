"""The models the project trained itself and ships in data/checkpoints/ (see data/README.md for the
command that made each): every loader of a shipped model is here.

* ``char_shakespeare``: lesson 1's character-level masked diffusion model (minillada's format);
* ``ar_shakespeare``: lesson 3's autoregressive twin of it, same network and budget;
* ``subword_shakespeare``: lesson 4's subword LLaDAModel (the released LLaDA layout) with its BPE
  tokenizer files and the record of how it was trained (training.json);
* ``instruct_shakespeare``: lesson 6's instruct model, ``subword_shakespeare`` fine-tuned on the
  lesson's instructions by minillada.cli.train_sft, with the same files (training.json holds the
  recipe, the loss curve and the held-out scores);
* ``rl_shakespeare``: lesson 9's model, ``instruct_shakespeare`` after reinforcement learning by
  minillada.cli.train_rl, with the same files (training.json holds the RL settings, the
  per-iteration history and every held-out item's grade).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from minillada.checkpoints.folder import CheckpointError, load_checkpoint
from minillada.checkpoints.hf import load_hf_checkpoint, save_hf_checkpoint
from minillada.checkpoints.train_state import TRAINER_FILE
from minillada.data.bpe import save_tokenizer
from minillada.data.char import CharTokenizer
from minillada.data.tokenizer import LLaDATokenizer
from minillada.models.llada import LLaDAModel
from minillada.runtime import repo_path

CHAR_SHAKESPEARE = (
    "char_shakespeare"  # lesson 1's model, trained longer by minillada.cli.train_char
)
AR_SHAKESPEARE = "ar_shakespeare"  # lesson 3's autoregressive twin of char_shakespeare
SUBWORD_SHAKESPEARE = "subword_shakespeare"  # lesson 4's model, by minillada.cli.train_llada
INSTRUCT_SHAKESPEARE = "instruct_shakespeare"  # lesson 6's model, by minillada.cli.train_sft
RL_SHAKESPEARE = "rl_shakespeare"  # lesson 9's model: lesson 6's after minillada.cli.train_rl
METRICS_FILE = "training.json"  # how the shipped subword model was trained and its measured bound


def shipped_checkpoint(name: str) -> Path:
    """The folder of the shipped checkpoint ``name`` inside the repository."""
    path = repo_path("data", "checkpoints", name)
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"The shipped checkpoint {name!r} is missing at data/checkpoints/{name}; it is part of "
            f"the repository, so restore it with `git checkout -- data/checkpoints/{name}`."
        )
    return path


def load_char_shakespeare(
    device: torch.device | str = "cpu",
) -> tuple[torch.nn.Module, CharTokenizer]:
    """Lesson 1's character-level masked diffusion model, trained on Tiny Shakespeare.

    Returns (model, tokenizer).
    """
    model, tokenizer, _ = load_checkpoint(shipped_checkpoint(CHAR_SHAKESPEARE), device)
    return model, tokenizer


def load_ar_shakespeare(
    device: torch.device | str = "cpu",
) -> tuple[torch.nn.Module, CharTokenizer]:
    """Lesson 3's causal twin of lesson 1's model, same budget: (model, tokenizer)."""
    model, tokenizer, _ = load_checkpoint(shipped_checkpoint(AR_SHAKESPEARE), device)
    return model, tokenizer


def _load_shipped_llada(name: str, device) -> tuple[LLaDAModel, LLaDATokenizer, dict[str, Any]]:
    folder = shipped_checkpoint(name)
    model = load_hf_checkpoint(folder, device=device, dtype=torch.float32)
    record = json.loads((folder / METRICS_FILE).read_text())
    return model, LLaDATokenizer.from_folder(folder), record


def load_subword_shakespeare(
    device: torch.device | str = "cpu",
) -> tuple[LLaDAModel, LLaDATokenizer, dict[str, Any]]:
    """Lesson 4's shipped subword LLaDAModel: (model, tokenizer, training record with metrics)."""
    return _load_shipped_llada(SUBWORD_SHAKESPEARE, device)


def load_instruct_shakespeare(
    device: torch.device | str = "cpu",
) -> tuple[LLaDAModel, LLaDATokenizer, dict[str, Any]]:
    """Lesson 6's shipped instruct model: (model, tokenizer, training record with its scores)."""
    return _load_shipped_llada(INSTRUCT_SHAKESPEARE, device)


def load_rl_shakespeare(
    device: torch.device | str = "cpu",
) -> tuple[LLaDAModel, LLaDATokenizer, dict[str, Any]]:
    """Lesson 9's shipped model, lesson 6's after RL: (model, tokenizer, the run's record: command,
    settings, per-iteration history and every held-out item's grade)."""
    return _load_shipped_llada(RL_SHAKESPEARE, device)


def ship_rl_run(run: str | Path, dest: str | Path, command: str | None = None) -> Path:
    """The shipped form of a finished full-weight minillada.cli.train_rl run: the weights, the
    tokenizer files and the run's training.json (no optimizer state). ``command``, if given,
    replaces the recorded command: the same flags with the run folder where a learner would put
    it, not where the benchmark machine did."""
    run, dest = Path(run), Path(dest)
    if not (run / METRICS_FILE).is_file():
        raise CheckpointError(f"{run} has no {METRICS_FILE}: is it a finished train_rl run?")
    record = json.loads((run / METRICS_FILE).read_text())
    if command is not None:
        record["command"] = command
    if dest.exists():
        shutil.rmtree(dest)
    save_hf_checkpoint(load_hf_checkpoint(run), dest)
    save_tokenizer(LLaDATokenizer.from_folder(run).tokenizer, dest)
    (dest / METRICS_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return dest


def ship_subword_run(run: str | Path, dest: str | Path, command: str) -> Path:
    """The shipped form of a finished minillada.cli.train_llada run: LLaDA-layout weights (no
    optimizer state), the tokenizer files, and training.json (the command, the settings, the
    metrics and the validation curve)."""
    run, dest = Path(run), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    save_hf_checkpoint(load_hf_checkpoint(run), dest)
    save_tokenizer(LLaDATokenizer.from_folder(run).tokenizer, dest)
    trainer = json.loads((run / TRAINER_FILE).read_text())
    history = trainer["history"]
    record = {
        "command": command,
        "iter_num": trainer["iter_num"],
        "train_config": trainer["train_config"],
        "metrics": trainer.get("metrics", {}),
        "tokenizer_chars_per_token": trainer.get("tokenizer_chars_per_token"),
        "world_size": trainer.get("world_size", 1),
        "val_history": {"iter": history["val_iter"], "nats_per_token": history["val"]},
    }
    (dest / METRICS_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return dest
