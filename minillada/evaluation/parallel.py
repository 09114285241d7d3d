"""Evaluation spread over the processes of ``torchrun``: each scores its share, then one gather.

Scoring a benchmark is *embarrassingly parallel*: every item (a question, a candidate answer) is
scored on its own, so N processes (``torchrun --nproc_per_node=N``, one GPU each, every process
holding a full copy of the model) can each score a different N-th of the items and finish about N
times sooner. Three steps:

1. ``shard``: process ``rank`` takes ``items[rank::world]``, remembering each item's global
   index. Strided rather than in blocks, because benchmarks are often sorted (by length, by
   source): blocks would hand one rank all the long items, and the whole run waits for the
   slowest rank; striding gives every rank the same mix, and shares that differ by one item at
   most.
2. each process applies the scoring function to its own items, with no communication at all.
3. ``gather``: one collective at the end (``all_gather_object``) sends every rank's
   (index, result) pairs to every rank, which puts them back in item order. The indices make the
   result checkable: an index missing or given twice is an error, never a silently short list.

Because every item is scored by the same operations as in a single process (one item per call,
no batching across ranks), the gathered list is the single-process list: bit for bit on CPUs,
and on identical GPUs up to the usual GPU nondeterminism. With one process (no ``torchrun``)
``evaluate_sharded(fn, items)`` is just ``[fn(x) for x in items]``, so the same script runs both
ways.

Usage (every rank runs the same script; call ``setup_distributed`` first and put the model on
the device it returns)::

    device = setup_distributed()
    model = model.to(device)
    scores = evaluate_sharded(lambda item: confidence_score(model, *item).score, items)
    if rank_and_world()[0] == 0:
        print(sum(scores) / len(scores))

``all_gather_object`` pickles the results, so they should be small Python objects (floats,
dataclasses of floats and lists), not tensors on the GPU. With NCCL it also needs each process's
GPU chosen beforehand (``torch.cuda.set_device``), which ``setup_distributed`` does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch.distributed as dist

from minillada.runtime import progress_bar, progress_disabled
from minillada.training.distributed import rank_and_world

T = TypeVar("T")
R = TypeVar("R")


def shard(
    items: Sequence[T], rank: int | None = None, world: int | None = None
) -> list[tuple[int, T]]:
    """This rank's items with their global indices: ``items[rank::world]`` as (index, item) pairs.

    ``rank`` and ``world`` default to this process's (``rank_and_world()``: (0, 1) without
    torchrun). Every index in ``range(len(items))`` lands on exactly one rank, and the ranks'
    shares differ by one item at most."""
    default_rank, default_world = rank_and_world()
    rank = default_rank if rank is None else rank
    world = default_world if world is None else world
    if world < 1:
        raise ValueError(f"world={world}: a world has at least one process.")
    if not 0 <= rank < world:
        raise ValueError(f"rank={rank} is outside [0, {world}): ranks run from 0 to world - 1.")
    return [(i, items[i]) for i in range(rank, len(items), world)]


def _listed(indices: list[int], limit: int = 10) -> str:
    """The first ``limit`` indices, and how many more (an error message stays readable)."""
    shown = ", ".join(str(i) for i in indices[:limit])
    more = len(indices) - limit
    return f"[{shown}{f', ... {more} more' if more > 0 else ''}]"


def merge_shards(per_rank: Sequence[Sequence[tuple[int, R]]], total: int) -> list[R]:
    """The results of every rank (each a list of (index, result) pairs) put back in item order.

    Raises RuntimeError when an index of ``range(total)`` is missing, given twice, or out of
    range: a rank that skipped items or sharded with another world must not give a silently
    short or reordered result."""
    if total < 0:
        raise ValueError(f"total={total}: the number of items cannot be negative.")
    pairs = [pair for rank_pairs in per_rank for pair in rank_pairs]
    counts = Counter(i for i, _ in pairs)
    problems = []
    # in the order they came (an index that is not an int would not sort among the others)
    outside = [i for i in counts if not (isinstance(i, int) and 0 <= i < total)]
    if outside:
        problems.append(f"indices outside range({total}): {_listed(outside)}")
    twice = sorted(i for i, n in counts.items() if n > 1 and i not in outside)
    if twice:
        problems.append(f"duplicated indices: {_listed(twice)}")
    missing = [i for i in range(total) if i not in counts]
    if missing:
        problems.append(f"missing indices: {_listed(missing)}")
    if problems:
        sizes = ", ".join(f"rank {r}: {len(p)}" for r, p in enumerate(per_rank))
        raise RuntimeError(
            f"gather of {total} items got {len(pairs)} results ({sizes}); "
            + "; ".join(problems)
            + ". Did a rank skip items, or were the items sharded with another rank/world?"
        )
    results: dict[int, R] = dict(pairs)
    return [results[i] for i in range(total)]


def gather(local: list[tuple[int, R]], total: int) -> list[R]:
    """Every rank's (index, result) pairs, put back in item order; every rank gets the full list.

    ``local`` is this rank's pairs (``shard``'s indices with the results); ``total`` the number of
    items. With more than one process this is a collective: every rank must call it. Raises
    RuntimeError when an index of ``range(total)`` is missing, given twice, or out of range
    (``merge_shards``); every rank sees the same gathered pairs, so every rank raises the same
    error and none is left waiting in a later collective."""
    _, world = rank_and_world()
    if world == 1:
        return merge_shards([list(local)], total)
    per_rank: list[list[tuple[int, R]] | None] = [None] * world
    # pickles each rank's list and sends it to every rank: one collective for the whole run
    dist.all_gather_object(per_rank, list(local))
    return merge_shards(per_rank, total)


def evaluate_sharded(fn: Callable[[T], R], items: Sequence[T], progress: bool = False) -> list[R]:
    """``[fn(x) for x in items]``, computed with each process scoring its ``shard`` of the items,
    then ``gather``-ed: every rank returns the full list, in item order.

    ``progress`` shows a bar on rank 0 only (it counts rank 0's share, about
    ``len(items) / world`` items; the other ranks advance at the same pace). With more than one
    process every rank must call this with the same items."""
    rank, world = rank_and_world()
    mine = shard(items, rank, world)
    desc = "evaluate" if world == 1 else f"evaluate (rank 0 of {world})"
    show = progress and not progress_disabled() and rank == 0  # one bar, not one per process
    bar = progress_bar(mine, desc=desc, leave=False, disable=not show)
    local = [(i, fn(item)) for i, item in bar]
    return gather(local, len(items))
