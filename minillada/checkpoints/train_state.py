"""Resuming training: one save and one load of a ``TrainState``, for both weight formats.

A training checkpoint is a folder with the weights (minillada's own format for lesson 1's model,
``minillada.checkpoints.folder``; the released LLaDA layout for an LLaDAModel,
``minillada.checkpoints.hf``) and, beside them, two files written here:

    optimizer.safetensors   AdamW moments, the loop's generator, the global RNG states
    trainer_state.json      optimizer hyper-parameters, iteration number, history (+ extra fields)

No pickle: a safetensors file holds only tensors, so loading one cannot run code. Loading
restores everything the loop reads (so a resumed run ends where an uninterrupted one does),
except which AdamW kernel runs (fused or multi-tensor): that belongs to the machine that
resumes, not the one that saved.
"""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from minillada.checkpoints.hf import load_hf_checkpoint, save_hf_checkpoint
from minillada.training.distributed import barrier, rank_and_world, unwrap
from minillada.training.loop import TrainConfig, TrainState

OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_FILE = "trainer_state.json"


class ResumeError(RuntimeError):
    """A folder holds no resumable training state, or a state that does not fit."""


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


def rng_state() -> dict[str, torch.Tensor]:
    """The global random states (torch CPU and every CUDA device). The loop itself draws from its
    own generator only, but a model with dropout or a user's callback might read these, and
    resuming must not depend on that."""
    out = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda_{i}"] = s
    return out


def _require_train_state(folder: str | Path) -> Path:
    """``folder`` as a Path, or a ResumeError saying why it cannot be resumed."""
    folder = Path(folder)
    if not (folder / OPTIMIZER_FILE).is_file() or not (folder / TRAINER_FILE).is_file():
        raise ResumeError(
            f"{folder} has no {OPTIMIZER_FILE} / {TRAINER_FILE}: it holds no training state, so "
            "there is nothing to resume (it was saved without state=..., or it is a released "
            "snapshot). "
            "Its weights alone load with minillada.checkpoints.folder.load_checkpoint or "
            "minillada.checkpoints.hf.load_hf_checkpoint."
        )
    return folder


def save_train_state(
    folder: str | Path, state: TrainState, extra: dict[str, Any] | None = None
) -> Path:
    """Write optimizer.safetensors and trainer_state.json for ``state`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, opt_meta = flatten_optimizer_state(state.optimizer.state_dict())
    tensors["generator_state"] = state.generator.get_state()
    tensors.update(rng_state())
    save_file(tensors, str(folder / OPTIMIZER_FILE))
    trainer = {
        "iter_num": state.iter_num,
        "optimizer": opt_meta,
        "history": state.history,
        **(extra or {}),
    }
    (folder / TRAINER_FILE).write_text(json.dumps(trainer))
    return folder


def load_train_state(folder: str | Path, state: TrainState) -> TrainState:
    """Fill a fresh TrainState (same model, same TrainConfig) from ``folder`` to resume training:
    optimizer moments, the loop's generator, the global RNG states (when saved), iteration number
    and history. The fresh optimizer keeps its own AdamW kernel choice (fused or not)."""
    folder = _require_train_state(folder)
    tensors = load_file(str(folder / OPTIMIZER_FILE))
    trainer = json.loads((folder / TRAINER_FILE).read_text())
    state.generator.set_state(tensors.pop("generator_state"))
    if "rng.torch_cpu" in tensors:  # lesson-1 checkpoints written before 0.2 have none
        torch.set_rng_state(tensors.pop("rng.torch_cpu"))
    cuda_states = sorted(k for k in tensors if k.startswith("rng.cuda_"))
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda_states][: torch.cuda.device_count()])
    for k in cuda_states:
        tensors.pop(k)
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


def _same_setting(saved: Any, given: Any) -> bool:
    """Equal, or two spellings of one existing folder (a relative and an absolute --base)."""
    if saved == given:
        return True
    if isinstance(saved, str) and isinstance(given, str) and Path(given).exists():
        return Path(saved).resolve() == Path(given).resolve()
    return False


def check_resume_settings(
    saved: dict[str, Any] | None,
    cfg: Any,
    folder: str | Path,
    may_change: tuple[str, ...] = (),
) -> None:
    """Refuse to resume a run with other training settings than it was saved with: the loop would
    go on silently as another run from the same weights. ``saved`` is the run's recorded config
    (``asdict`` of its dataclass, or a dict; None for a run that recorded none), ``cfg`` this
    command's (a dataclass or a dict); ``max_iters`` and the names in ``may_change`` may differ.
    Fields are named as the CLIs' flags."""
    if saved is None:
        return
    given = json.loads(json.dumps(asdict(cfg) if is_dataclass(cfg) else cfg))  # tuples as lists
    differ = [
        f"--{key.replace('_', '-')}: the run has {saved[key]}, this command {value}"
        for key, value in given.items()
        if key not in ("max_iters", *may_change)
        and key in saved
        and not _same_setting(saved[key], value)
    ]
    if differ:
        raise ResumeError(
            f"{folder} was trained with other settings ({'; '.join(differ)}). Resuming continues "
            "a run with its own settings: give the flags it was started with (only --iters may "
            "change)"
        )


def check_resume_folder(
    folder: str | Path,
    cfg: Any,
    may_change: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> None:
    """``check_resume_settings`` against what a training checkpoint folder recorded, before any
    work: ``save_training_checkpoint``'s ``train_config`` for ``cfg``, and its extra fields for
    ``extra`` (the run-level settings beside the config; a field the run did not record is not
    compared). A ResumeError if the folder holds no training state."""
    folder = _require_train_state(folder)
    trainer = json.loads((folder / TRAINER_FILE).read_text())
    extra = extra or {}
    saved = {**trainer.get("train_config", {}), **{k: trainer[k] for k in extra if k in trainer}}
    given = {**(asdict(cfg) if is_dataclass(cfg) else cfg), **extra}
    check_resume_settings(saved, given, folder, may_change)


# LLaDA training checkpoints: weights in the released layout + the training state -----------------


def save_training_checkpoint(
    folder: str | Path,
    model: torch.nn.Module,
    state: TrainState,
    cfg: TrainConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write an LLaDAModel's weights (released layout), its training state and ``cfg``.

    Only rank 0 writes; the other ranks wait for it. Returns the folder.
    """
    folder = Path(folder)
    rank, _ = rank_and_world()
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        save_hf_checkpoint(unwrap(model), folder)
        save_train_state(folder, state, {"train_config": asdict(cfg), **(extra or {})})
    barrier()
    return folder


def load_training_checkpoint(
    folder: str | Path, model: torch.nn.Module, state: TrainState
) -> TrainState:
    """Resume: load the weights into ``model`` (possibly DDP-wrapped) and fill ``state`` (built
    for the same model and config) with ``load_train_state``."""
    folder = _require_train_state(folder)
    inner = unwrap(model)
    device = next(inner.parameters()).device
    loaded = load_hf_checkpoint(folder, device=device, config=inner.config)
    with torch.no_grad():
        for p, q in zip(inner.parameters(), loaded.parameters(), strict=True):
            p.copy_(q)
    return load_train_state(folder, state)
