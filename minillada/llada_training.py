"""Training a LLaDAModel the way LLaDA was pre-trained, at any size, on one process or many.

What lesson 4 adds to lesson 1's loop (``minillada.training``):

* **Warmup-stable-decay** learning rate (LLaDA §2.3 / spec §8): a linear warmup to the peak, a long
  constant stretch, and a linear decay to a floor at the end (``wsd_lr``). Unlike a cosine, the
  stable phase does not need to know the run's length in advance; only the decay does.
* **Random-length crop**: with probability 1% a whole batch is truncated to a random length
  U{1..L} (``random_length_crop``), so that the model also sees short inputs.
* **Gradient accumulation**: a global batch is cut into equal chunks whose gradients add up before
  one optimizer step, so a large batch fits in a small memory.
* **bf16 autocast** on a GPU only (a flag); the weights, the AdamW moments and the loss stay fp32.
* **Exact resume**: the checkpoint holds the weights (released LLaDA layout, via
  ``minillada.hf_checkpoint``), the AdamW state, the iteration number and every random state the
  loop reads, so a run stopped and resumed ends with the same parameters as one never stopped.
* **Data parallel**: under ``torchrun`` each rank runs its share of the chunks inside
  DistributedDataParallel, which averages the gradients. Row ``i`` of step ``s`` (its window, its
  t and its mask noise) is always drawn from a generator seeded by (seed, s, i), whichever chunk or
  process runs it, so any split of the global batch (one process, accumulation, several processes)
  computes the same step up to float rounding.

Shapes: B = global batch, b = chunk (micro-batch), L = sequence length (after any crop).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from minillada.checkpoint import CheckpointError, flatten_optimizer_state, unflatten_optimizer_state
from minillada.hf_checkpoint import load_hf_checkpoint, save_hf_checkpoint
from minillada.masking import apply_mask, mask_probability
from minillada.objectives import masked_diffusion_loss
from minillada.training import TrainConfig, TrainState, make_optimizer, progress_disabled

CROP_PROB = 0.01  # LLaDA: 1% of pre-training batches get a random length


@dataclass
class LLaDATrainConfig(TrainConfig):
    """lesson 1's TrainConfig plus what LLaDA's pre-training adds."""

    block_size: int = 256  # L, tokens per training sequence (before a crop)
    grad_accum: int = 1  # chunks per process per optimizer step; chunk = B / (accum x world)
    decay_iters: int = 0  # length of the final linear decay of the WSD schedule; 0 = none
    crop_prob: float = CROP_PROB  # probability that a batch is cut to a random length
    bf16: bool = False  # bf16 autocast for the forward pass (GPU only; ignored on the CPU)


# --------------------------------------------------------------------------------------------------
# Pure pieces
# --------------------------------------------------------------------------------------------------


def wsd_lr(
    it: int, max_iters: int, lr: float, min_lr: float, warmup_iters: int, decay_iters: int
) -> float:
    """Warmup-stable-decay: linear warmup to ``lr``, constant, then linear decay to ``min_lr``.

    Iteration ``it`` (0-based) of ``max_iters``: warmup gives lr * (it + 1) / warmup_iters; the
    decay occupies the last ``decay_iters`` iterations and reaches ``min_lr`` at the last one.
    LLaDA-8B: warmup 2000 iterations to 4e-4, stable, (a step down to 1e-4 after 1.2T tokens), and
    a final linear decay 1e-4 -> 1e-5 over the last 0.3T tokens.
    """
    if it < warmup_iters:
        return lr * (it + 1) / warmup_iters
    decay_start = max_iters - decay_iters
    if decay_iters <= 0 or it < decay_start:
        return lr
    if it >= max_iters - 1:
        return min_lr
    progress = (it - decay_start + 1) / decay_iters  # in (0, 1]
    return lr + progress * (min_lr - lr)


def crop_length(block_size: int, generator: torch.Generator, prob: float = CROP_PROB) -> int:
    """The length a batch is trained at: ``block_size``, or with probability ``prob`` U{1..L}.

    Both random numbers are always drawn, so the generator advances the same way every step.
    """
    u = torch.rand((), generator=generator).item()
    length = int(torch.randint(1, block_size + 1, (), generator=generator))
    return length if u < prob else block_size


def random_length_crop(
    x0: torch.Tensor, generator: torch.Generator, prob: float = CROP_PROB
) -> torch.Tensor:
    """LLaDA's variable-length trick: with probability ``prob`` return x0[:, :U{1..L}]."""
    return x0[:, : crop_length(x0.shape[1], generator, prob)]


def step_generator(seed: int, step: int, row: int = -1) -> torch.Generator:
    """The generator of step ``step`` (row = -1) or of row ``row`` of its global batch: a function
    of (seed, step, row) only, so every process that needs it makes the same one."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 100_003 + row + 1)


def draw_rows(
    data: torch.Tensor, rows: range, batch_size: int, block_size: int, seed: int, step: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``rows`` of step ``step``'s global batch: windows x0 (b, L), t (b,), noise u (b, L).

    t is stratified over the *global* batch, t_i = (u0 + i) / B with u0 from the step's generator;
    row i's window start and mask noise come from its own generator. A row is therefore the same
    whichever chunk, accumulation step or process draws it.
    """
    u0 = torch.rand((), generator=step_generator(seed, step))
    t = (u0 + torch.arange(batch_size, dtype=torch.float32)) / batch_size  # (B,)
    windows, noise = [], []
    for i in rows:
        g = step_generator(seed, step, i)
        start = int(torch.randint(len(data) - block_size + 1, (), generator=g))
        windows.append(data[start : start + block_size])
        noise.append(torch.rand(block_size, generator=g))
    return torch.stack(windows), t[rows.start : rows.stop], torch.stack(noise)


def chunk_loss(
    model: torch.nn.Module, x0: torch.Tensor, t: torch.Tensor, u: torch.Tensor, mask_id: int
) -> torch.Tensor:
    """LLaDA's loss on one chunk with given times and noise (lesson 1's Eq. 3, nothing new)."""
    xt, masked = apply_mask(x0, t, u, mask_id)  # (b, L) each
    logits = model(xt)  # (b, L, V)
    return masked_diffusion_loss(logits, x0, masked, mask_probability(t))


# --------------------------------------------------------------------------------------------------
# Distributed helpers (single process: world of one)
# --------------------------------------------------------------------------------------------------


def rank_and_world() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


def new_llada_state(model: torch.nn.Module, cfg: LLaDATrainConfig) -> TrainState:
    """AdamW (lesson 1's grouping) and the crop generator, seeded from cfg.seed."""
    return TrainState(make_optimizer(unwrap(model), cfg), torch.Generator().manual_seed(cfg.seed))


def train_llada(
    model: torch.nn.Module,
    train_ids: torch.Tensor,
    mask_id: int,
    cfg: LLaDATrainConfig,
    state: TrainState | None = None,
    evaluate: Callable[[torch.nn.Module], float] | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainState:
    """Train ``model`` (possibly DDP-wrapped) to cfg.max_iters or for ``stop_after`` more steps.

    Each step: the learning rate from ``wsd_lr``; one crop length for the whole global batch; the
    global batch of cfg.batch_size rows (``draw_rows``: windows, t and mask noise, each a function
    of (seed, step, row)) in ``grad_accum x world`` equal chunks; each chunk's loss scaled by
    1 / grad_accum (DDP then averages over ranks), so the gradient is that of the mean loss over
    the global batch; clip; AdamW step. ``evaluate`` runs on rank 0 only.
    """
    rank, world = rank_and_world()
    n_chunks = cfg.grad_accum * world
    if cfg.batch_size % n_chunks:
        raise ValueError(
            f"batch_size={cfg.batch_size} must split into grad_accum x world_size = {n_chunks} "
            f"equal chunks; choose a batch size that is a multiple of {n_chunks}."
        )
    chunk = cfg.batch_size // n_chunks
    state = state or new_llada_state(model, cfg)
    device = next(model.parameters()).device
    use_bf16 = cfg.bf16 and device.type == "cuda"
    end = cfg.max_iters if stop_after is None else min(cfg.max_iters, state.iter_num + stop_after)
    model.train()
    bar = tqdm(
        total=end - state.iter_num,
        disable=not progress or progress_disabled() or rank != 0,
        desc="train",
        leave=False,
    )
    t0 = time.perf_counter()
    while state.iter_num < end:
        it = state.iter_num
        lr = wsd_lr(it, cfg.max_iters, cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.decay_iters)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        length = crop_length(cfg.block_size, state.generator, cfg.crop_prob)  # same on all ranks
        state.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64)
        for a in range(cfg.grad_accum):
            c = rank * cfg.grad_accum + a  # this rank's chunks: a contiguous slice of the batch
            rows = range(c * chunk, (c + 1) * chunk)
            x0, t, u = draw_rows(train_ids, rows, cfg.batch_size, cfg.block_size, cfg.seed, it)
            x0, u = x0[:, :length].to(device), u[:, :length].to(device)  # the crop
            last = a == cfg.grad_accum - 1
            sync = nullcontext() if last or world == 1 else model.no_sync()
            autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
            with sync:
                with autocast:
                    loss = chunk_loss(model, x0, t.to(device), u, mask_id)
                (loss / cfg.grad_accum).backward()
            total += loss.detach().double().cpu() / cfg.grad_accum
        if world > 1:  # the logged loss is the global batch's, as one process would log it
            total = total.to(device)  # nccl reduces GPU tensors only
            dist.all_reduce(total)
            total = total.cpu() / world
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        state.optimizer.step()
        state.iter_num += 1
        state.history["iter"].append(it)
        state.history["loss"].append(total.item())
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
                bar.set_postfix(loss=f"{total.item():.3f}", val=f"{val:.3f}")
            barrier()
        elif it % 10 == 0:
            bar.set_postfix(loss=f"{total.item():.3f}")
        bar.update(1)
    bar.close()
    model.eval()
    state.history.setdefault("seconds", []).append(time.perf_counter() - t0)
    return state


# --------------------------------------------------------------------------------------------------
# Checkpoint and resume
# --------------------------------------------------------------------------------------------------

TRAINER_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"


def rng_state() -> dict[str, torch.Tensor]:
    """The global random states (torch CPU and every CUDA device); the loop itself reads none,
    but a model with dropout or a user's callback might, and resuming must not depend on that."""
    out = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda_{i}"] = s
    return out


def save_training_checkpoint(
    folder: str | Path,
    model: torch.nn.Module,
    state: TrainState,
    cfg: LLaDATrainConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write weights (LLaDA layout), AdamW moments, generator and RNG states, iteration, history.

    Only rank 0 writes; the other ranks wait for it. Returns the folder.
    """
    folder = Path(folder)
    rank, _ = rank_and_world()
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        save_hf_checkpoint(unwrap(model), folder)
        tensors, opt_meta = flatten_optimizer_state(state.optimizer.state_dict())
        tensors["generator_state"] = state.generator.get_state()
        tensors.update(rng_state())
        save_file(tensors, str(folder / OPTIMIZER_FILE))
        trainer = {
            "iter_num": state.iter_num,
            "train_config": asdict(cfg),
            "optimizer": opt_meta,
            "history": state.history,
            **(extra or {}),
        }
        (folder / TRAINER_FILE).write_text(json.dumps(trainer))
    barrier()
    return folder


def load_training_checkpoint(
    folder: str | Path, model: torch.nn.Module, state: TrainState
) -> TrainState:
    """Resume: load weights into ``model`` and fill ``state`` (built for the same model and config)
    with the optimizer, generator and RNG states, iteration number and history."""
    folder = Path(folder)
    if not (folder / OPTIMIZER_FILE).is_file() or not (folder / TRAINER_FILE).is_file():
        raise CheckpointError(
            f"{folder} has no {OPTIMIZER_FILE} / {TRAINER_FILE}: it is not a training checkpoint "
            f"written by minillada.llada_training.save_training_checkpoint, so it cannot be "
            f"resumed (its weights alone load with minillada.hf_checkpoint.load_hf_checkpoint)."
        )
    inner = unwrap(model)
    device = next(inner.parameters()).device
    loaded = load_hf_checkpoint(folder, device=device, config=inner.config)
    with torch.no_grad():
        for p, q in zip(inner.parameters(), loaded.parameters(), strict=True):
            p.copy_(q)
    tensors = load_file(str(folder / OPTIMIZER_FILE))
    trainer = json.loads((folder / TRAINER_FILE).read_text())
    state.generator.set_state(tensors.pop("generator_state"))
    torch.set_rng_state(tensors.pop("rng.torch_cpu"))
    cuda_states = sorted(k for k in tensors if k.startswith("rng.cuda_"))
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda_states][: torch.cuda.device_count()])
    for k in cuda_states:
        tensors.pop(k)
    state.optimizer.load_state_dict(unflatten_optimizer_state(tensors, trainer["optimizer"]))
    state.iter_num = trainer["iter_num"]
    state.history = trainer["history"]
    return state
