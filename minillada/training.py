"""A small, generic training loop: AdamW, linear warmup + cosine decay, gradient clipping, tqdm.

The loop knows nothing about diffusion: it calls ``get_batch(generator)`` and
``loss_fn(model, batch, generator)``, so lesson 3 trains its autoregressive twin with the same code.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm


def progress_disabled() -> bool:
    """TQDM_DISABLE=1 (set by the tests) turns every progress bar off, even where one is
    requested."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in {"1", "true", "yes"}


@dataclass
class TrainConfig:
    max_iters: int = 2000
    batch_size: int = 32
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-4  # cosine decays to this
    warmup_iters: int = 100
    weight_decay: float = 0.1  # on weight matrices only; see make_optimizer
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    eval_interval: int = 250  # iterations between validation estimates; 0 = never
    seed: int = 1337


def lr_at(it: int, max_iters: int, lr: float, min_lr: float, warmup_iters: int) -> float:
    """Linear warmup from lr/warmup_iters to lr, then cosine decay to min_lr at max_iters."""
    if it < warmup_iters:
        return lr * (it + 1) / warmup_iters
    if it >= max_iters:
        return min_lr
    progress = (it - warmup_iters) / max(1, max_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices (dim >= 2) and none on norms and biases, as
    nanoGPT groups them, except that parameters whose name contains "emb" (TinyTransformer's
    ``tok_emb``, ``pos_emb``) are not decayed either. LLaDAModel's token embedding is called
    ``wte`` and is decayed; the shipped subword model was trained that way."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "emb" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "emb" not in n)]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    try:
        # One fused kernel for the whole update (CPU and CUDA, torch >= 2.4): a quarter of the
        # time of the multi-tensor path, which matters for small models on a CPU.
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch or a device without the kernel
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


@dataclass
class TrainState:
    """Everything needed to continue a run exactly where it stopped."""

    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    iter_num: int = 0
    history: dict[str, list] = field(
        default_factory=lambda: {"iter": [], "loss": [], "lr": [], "val_iter": [], "val": []}
    )


def new_train_state(model: torch.nn.Module, cfg: TrainConfig) -> TrainState:
    return TrainState(make_optimizer(model, cfg), torch.Generator().manual_seed(cfg.seed))


def train(
    model: torch.nn.Module,
    get_batch: Callable[[torch.Generator], torch.Tensor],
    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Generator], torch.Tensor],
    cfg: TrainConfig,
    state: TrainState | None = None,
    evaluate: Callable[[torch.nn.Module], float] | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainState:
    """Train until ``cfg.max_iters`` (or for ``stop_after`` more iterations), returning the state.

    Passing the returned state back in resumes the run: the optimizer moments, the iteration number
    (hence the learning rate) and the data/noise generator all continue.
    """
    state = state or new_train_state(model, cfg)
    end = cfg.max_iters if stop_after is None else min(cfg.max_iters, state.iter_num + stop_after)
    model.train()
    bar = tqdm(
        total=end - state.iter_num,
        disable=not progress or progress_disabled(),
        desc="train",
        leave=False,
    )
    t0 = time.perf_counter()
    while state.iter_num < end:
        it = state.iter_num
        lr = lr_at(it, cfg.max_iters, cfg.lr, cfg.min_lr, cfg.warmup_iters)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        batch = get_batch(state.generator)
        loss = loss_fn(model, batch, state.generator)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        state.optimizer.step()
        state.iter_num += 1
        state.history["iter"].append(it)
        state.history["loss"].append(loss.item())
        state.history["lr"].append(lr)
        if (
            evaluate is not None
            and cfg.eval_interval
            and (state.iter_num % cfg.eval_interval == 0 or state.iter_num == cfg.max_iters)
        ):
            model.eval()
            val = evaluate(model)
            model.train()
            state.history["val_iter"].append(state.iter_num)
            state.history["val"].append(val)
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{val:.3f}")
        elif it % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update(1)
    bar.close()
    model.eval()
    state.history.setdefault("seconds", []).append(time.perf_counter() - t0)
    return state
