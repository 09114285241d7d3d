"""Training a LLaDAModel the way LLaDA was pre-trained, at any size, on one process or many.

What lesson 4 adds to lesson 1's step (the loop itself is ``minillada.training.loop``):

* **Warmup-stable-decay** learning rate (LLaDA paper §2.3): ``minillada.training.schedules.wsd_lr``.
* **Random-length crop**: with probability 1% a whole batch is truncated to a random length
  U{1..L} (``random_length_crop``), so that the model also sees short inputs.
* **Gradient accumulation**: a global batch is cut into equal chunks whose gradients add up before
  one optimizer step, so a large batch fits in a small memory.
* **bf16 autocast** on a GPU only (a flag); the weights, the AdamW moments and the loss stay fp32.
* **Exact resume**: ``minillada.checkpoints.train_state.save_training_checkpoint`` writes the
  weights (released LLaDA layout), the AdamW state, the iteration number and every random state
  the loop reads, so a run stopped and resumed ends with the same parameters as one never stopped.
* **Data parallel**: under ``torchrun`` each rank runs its share of the chunks inside
  DistributedDataParallel, which averages the gradients. Row ``i`` of step ``s`` (its window, its
  t and its mask noise) is always drawn from a generator seeded by (seed, s, i), whichever chunk or
  process runs it, so any split of the global batch (one process, accumulation, several processes)
  computes the same step up to float rounding.

Shapes: B = global batch, b = chunk (micro-batch), L = sequence length (after any crop).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from minillada.diffusion.masking import apply_mask, mask_probability
from minillada.diffusion.objectives import masked_diffusion_loss
from minillada.training.distributed import rank_and_world
from minillada.training.loop import Step, TrainConfig, TrainState, new_train_state, train_loop
from minillada.training.schedules import wsd_lr

CROP_PROB = 0.01  # LLaDA: 1% of pre-training batches get a random length


@dataclass
class LLaDATrainConfig(TrainConfig):
    """lesson 1's TrainConfig plus what LLaDA's pre-training adds."""

    block_size: int = 256  # L, tokens per training sequence (before a crop)
    grad_accum: int = 1  # chunks per process per optimizer step; chunk = B / (accum x world)
    decay_iters: int = 0  # length of the final linear decay of the WSD schedule; 0 = none
    crop_prob: float = CROP_PROB  # probability that a batch is cut to a random length
    bf16: bool = False  # bf16 autocast for the forward pass (GPU only; ignored on the CPU)

    def learning_rate(self, it: int) -> float:
        """The learning rate of iteration ``it``: warmup-stable-decay (``wsd_lr``)."""
        return wsd_lr(it, self.max_iters, self.lr, self.min_lr, self.warmup_iters, self.decay_iters)


# --------------------------------------------------------------------------------------------------
# Pure pieces
# --------------------------------------------------------------------------------------------------


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
# The loop
# --------------------------------------------------------------------------------------------------


def new_llada_state(model: torch.nn.Module, cfg: LLaDATrainConfig) -> TrainState:
    """AdamW (lesson 1's grouping) and the crop generator, seeded from cfg.seed."""
    return new_train_state(model, cfg)


def llada_step(train_ids: torch.Tensor, mask_id: int, cfg: LLaDATrainConfig) -> Step:
    """LLaDA's pre-training step for ``train_loop``: one crop length for the whole global batch
    (from the loop's generator, the same on every rank); the global batch of cfg.batch_size rows
    (``draw_rows``: windows, t and mask noise, each a function of (seed, step, row)) in
    ``grad_accum x world`` equal chunks, this rank's ``grad_accum`` of them; each chunk's loss
    scaled by 1 / grad_accum (DDP then averages over ranks), so the gradient is that of the mean
    loss over the global batch. Returns that global mean loss, as one process would log it."""
    rank, world = rank_and_world()
    n_chunks = cfg.grad_accum * world
    if cfg.batch_size % n_chunks:
        raise ValueError(
            f"batch_size={cfg.batch_size} must split into grad_accum x world_size = {n_chunks} "
            f"equal chunks; choose a batch size that is a multiple of {n_chunks}."
        )
    chunk = cfg.batch_size // n_chunks

    def step(model: torch.nn.Module, state: TrainState) -> float:
        device = next(model.parameters()).device
        use_bf16 = cfg.bf16 and device.type == "cuda"
        it = state.iter_num
        length = crop_length(cfg.block_size, state.generator, cfg.crop_prob)  # same on all ranks
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
        return total.item()

    return step


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
    """Train ``model`` (possibly DDP-wrapped) to cfg.max_iters or for ``stop_after`` more steps:
    ``train_loop`` with ``llada_step`` (WSD learning rate, crop, accumulation, data parallel).
    ``evaluate`` runs on rank 0 only."""
    step = llada_step(train_ids, mask_id, cfg)
    return train_loop(model, step, cfg, state, evaluate, stop_after, progress)
