"""One training loop for every model of the course: AdamW, a learning-rate schedule, gradient
clipping, periodic evaluation, tqdm, and exact resume through ``TrainState``.

The loop knows nothing about diffusion. What one iteration computes is a *step*: a function
``step(model, state) -> float`` that draws its batch, runs forward and backward (accumulating
gradients however it likes) and returns the loss to log. The loop sets the learning rate, zeroes
the gradients, calls the step, clips and updates. ``train`` runs lesson 1's step (one batch, one
loss; lesson 3 trains its autoregressive twin with it); ``minillada.training.llada`` runs LLaDA's
(crop, accumulation, data parallel) through the same loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from minillada.runtime import progress_bar, progress_disabled
from minillada.training.distributed import barrier, rank_and_world, unwrap
from minillada.training.schedules import lr_at


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

    def learning_rate(self, it: int) -> float:
        """The learning rate of iteration ``it``: warmup + cosine (``lr_at``)."""
        return lr_at(it, self.max_iters, self.lr, self.min_lr, self.warmup_iters)


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
    """Everything needed to continue a run exactly where it stopped
    (saved and loaded by ``minillada.checkpoints.train_state``)."""

    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the loop's own random numbers (batches, noise, crops)
    iter_num: int = 0
    history: dict[str, list] = field(
        default_factory=lambda: {"iter": [], "loss": [], "lr": [], "val_iter": [], "val": []}
    )


def new_train_state(model: torch.nn.Module, cfg: TrainConfig) -> TrainState:
    """AdamW (``make_optimizer``) and a generator seeded from cfg.seed."""
    return TrainState(make_optimizer(unwrap(model), cfg), torch.Generator().manual_seed(cfg.seed))


# step(model, state) -> the loss of this iteration; it has already called backward()
Step = Callable[[torch.nn.Module, TrainState], float]


def train_loop(
    model: torch.nn.Module,
    step: Step,
    cfg: TrainConfig,
    state: TrainState | None = None,
    evaluate: Callable[[torch.nn.Module], float] | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainState:
    """Train until ``cfg.max_iters`` (or for ``stop_after`` more iterations), returning the state.

    Each iteration: the learning rate from ``cfg.learning_rate``, zeroed gradients, ``step``, clip,
    AdamW. ``evaluate`` runs every ``cfg.eval_interval`` iterations and at the end, on rank 0 only.
    Passing the returned state back in resumes the run: the optimizer moments, the iteration number
    (hence the learning rate) and the loop's generator all continue.
    """
    state = state or new_train_state(model, cfg)
    rank, _ = rank_and_world()
    end = cfg.max_iters if stop_after is None else min(cfg.max_iters, state.iter_num + stop_after)
    model.train()
    bar = progress_bar(
        total=end - state.iter_num,
        disable=not progress or progress_disabled() or rank != 0,
        desc="train",
        leave=False,
    )
    t0 = time.perf_counter()
    while state.iter_num < end:
        it = state.iter_num
        lr = cfg.learning_rate(it)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        state.optimizer.zero_grad(set_to_none=True)
        loss = step(model, state)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        state.optimizer.step()
        state.iter_num += 1
        state.history["iter"].append(it)
        state.history["loss"].append(loss)
        state.history["lr"].append(lr)
        if (
            evaluate is not None
            and cfg.eval_interval
            and (state.iter_num % cfg.eval_interval == 0 or state.iter_num == cfg.max_iters)
        ):
            if rank == 0:
                model.eval()
                val = evaluate(unwrap(model))
                model.train()
                state.history["val_iter"].append(state.iter_num)
                state.history["val"].append(val)
                bar.set_postfix(loss=f"{loss:.3f}", val=f"{val:.3f}")
            barrier()
        elif it % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(1)
    bar.close()
    model.eval()
    state.history.setdefault("seconds", []).append(time.perf_counter() - t0)
    return state


def loss_step(
    get_batch: Callable[[torch.Generator], torch.Tensor],
    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Generator], torch.Tensor],
) -> Step:
    """Lesson 1's step: ``batch = get_batch(generator)``,
    ``loss = loss_fn(model, batch, generator)``, backward."""

    def step(model: torch.nn.Module, state: TrainState) -> float:
        batch = get_batch(state.generator)
        loss = loss_fn(model, batch, state.generator)
        loss.backward()
        return loss.item()

    return step


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
    """``train_loop`` with lesson 1's step: each iteration draws ``get_batch(generator)`` and
    minimises ``loss_fn(model, batch, generator)``."""
    return train_loop(
        model, loss_step(get_batch, loss_fn), cfg, state, evaluate, stop_after, progress
    )
