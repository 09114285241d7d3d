"""Evaluation spread over the processes of ``torchrun``: each scores its share, then the shares
are put back together, through one gather in memory or through one results file per process.

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
3. the results are put back in item order, checked by their indices (``merge_shards``: an index
   missing or given twice is an error, never a silently short list), in one of two ways:

   * in memory (``evaluate_sharded(fn, items)``): ``gather``, one collective at the end
     (``all_gather_object``) that sends every rank's (index, result) pairs to every rank. Fine for
     minutes of work; for hours it is fragile: a rank that dies loses everything, and the others
     wait in the collective for the slowest rank, whose per-item times vary about 10x on GSM8K,
     past NCCL's default 10-minute timeout;
   * through files (``evaluate_sharded(fn, items, store=ResultsStore(...))``): every rank appends
     each finished item to its own results file (``results_file``; ``<stem>.rank<r>-of-<w>.jsonl``
     beside ``store.path``, or ``store.path`` itself in a single process), skipping the items a
     previous run of the same command already wrote there. No collective runs at all: at the end
     every rank waits for the other ranks' files to hold their whole shares, reads them, and
     rank 0 writes the merged file at ``store.path`` (``merge_result_files``, also
     ``python -m minillada.cli.evaluate ... --merge`` after the fact).

   The end of a file-backed run *polls the files* (every ``poll_seconds``, for at most
   ``wait_seconds``, 6 hours by default) rather than waiting in a ``torch.distributed.barrier``
   created with a long timeout: polling needs nothing from the process group, so it behaves the
   same under NCCL and gloo, with no watchdog or backend timeout to configure, and it waits for
   exactly what the merge needs (the files complete on disk), not for the processes. A rank that
   crashes makes ``torchrun`` stop the others; its finished items stay in its file for the
   restart. On several machines ``store.path`` must be on a folder they share.

Because every item is scored by the same operations as in a single process (one item per call,
no batching across ranks), the merged list is the single-process list: bit for bit on CPUs, and
on identical GPUs up to the usual GPU nondeterminism. With one process (no ``torchrun``)
``evaluate_sharded(fn, items)`` is just ``[fn(x) for x in items]``, so the same script runs both
ways.

With ``progress=True`` rank 0 shows a bar that stays on screen, with items/s and, given
``Display.correct``, the accuracy so far; after its first items (``Display.first_items``, or
``first_seconds`` if that comes sooner) it prints one line with the expected minutes for the
requested items and for the whole benchmark (``Display.full_size``) at that rate
(``forecast_line``). That line is printed under ``TQDM_DISABLE=1`` too: it is one line, not a
bar, and it is what decides whether a run is worth starting.

Usage (every rank runs the same script; call ``setup_distributed`` first and put the model on
the device it returns)::

    device = setup_distributed()
    model = model.to(device)
    scores = evaluate_sharded(lambda item: confidence_score(model, *item).score, items)
    if rank_and_world()[0] == 0:
        print(sum(scores) / len(scores))

``all_gather_object`` pickles the results, so they should be small Python objects (floats,
dataclasses of floats and lists), not tensors on the GPU. With NCCL it also needs each process's
GPU chosen beforehand (``torch.cuda.set_device``), which ``setup_distributed`` does. A file-backed
run writes ``store.encode(result)``, a dict of JSON values, and returns ``store.decode`` of what
the files hold.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch.distributed as dist

from minillada.evaluation.results_file import (
    ResultsFile,
    ResultsFileError,
    check_fingerprint,
    rank_path,
    read_results,
    write_results,
)
from minillada.runtime import progress_bar
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


@dataclass(frozen=True)
class Display:
    """What rank 0 shows while a run goes (with ``progress=True``): a bar and one forecast line."""

    name: str = "evaluate"  # the bar's label, e.g. "GSM8K"
    full_size: int | None = None  # items in the whole benchmark (GSM8K: 1,319), for the forecast
    full_name: str = "items"  # what the forecast calls them, e.g. "GSM8K problems"
    correct: Callable[[int, Any], bool] | None = None  # (index, result) -> right: accuracy so far
    first_items: int = 2  # forecast after this many items have been timed,
    first_seconds: float = 60.0  # or after this many seconds, whichever comes first


@dataclass(frozen=True)
class ResultsStore:
    """Where a run keeps its results as it goes, one line per item (``results_file``)."""

    path: Path  # the results file (per-rank files go beside it under torchrun)
    fingerprint: dict  # what produced the results: a file with another is refused
    encode: Callable[[Any], dict]  # a result as JSON values (e.g. dataclasses.asdict)
    decode: Callable[[dict], Any]  # and back
    wait_seconds: float = 6 * 3600.0  # at the end, how long to wait for the other ranks' files
    poll_seconds: float = 1.0  # how often to look at them meanwhile


def _minutes(seconds: float) -> str:
    """A duration as people read it: seconds under a minute, minutes, and hours beside a long
    run's minutes."""
    minutes = seconds / 60
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    text = f"{minutes:.1f} min" if minutes < 10 else f"{minutes:,.0f} min"
    return text + (f" ({minutes / 60:.1f} h)" if minutes >= 120 else "")


def forecast_line(
    display: Display, seconds_per_item: float, timed: int, requested: int, left: int, world: int
) -> str:
    """The expected minutes for this run and for the whole benchmark, from one rank's rate (every
    rank scores about ``requested / world`` items, one after the other)."""
    share = math.ceil(requested / world)
    where = "in one process" if world == 1 else f"on {world} processes at this rate each"
    line = (
        f"{display.name}: {seconds_per_item:.2f} s per item (the first {timed}): the "
        f"{requested:,} requested items take about {_minutes(seconds_per_item * share)} "
        f"({_minutes(seconds_per_item * left)} left)"
    )
    if display.full_size is not None:
        full = seconds_per_item * math.ceil(display.full_size / world)
        line += f", all {display.full_size:,} {display.full_name} about {_minutes(full)}"
    return line + f", {where}"


class _Watch:
    """Rank 0's bar (kept on screen, items/s, accuracy so far) and its one forecast line."""

    def __init__(
        self, display: Display, show: bool, mine: int, done: dict[int, Any], total: int
    ) -> None:
        _, self.world = rank_and_world()
        self.display, self.show, self.total = display, show, total
        self.left = mine - len(done)
        self.right = sum(display.correct(i, r) for i, r in done.items()) if display.correct else 0
        self.scored, self.timed = len(done), 0
        self.start, self.forecast_printed = time.perf_counter(), False
        desc = display.name if self.world == 1 else f"{display.name} (rank 0 of {self.world})"
        self.bar = progress_bar(
            total=mine, initial=len(done), desc=desc, unit="item", leave=True, disable=not show
        )
        self._postfix()

    def _postfix(self) -> None:
        if self.display.correct is not None and self.scored:
            accuracy = 100 * self.right / self.scored
            self.bar.set_postfix_str(f"acc {self.right}/{self.scored} = {accuracy:.1f}%")

    def update(self, index: int, result: Any) -> None:
        self.scored, self.timed, self.left = self.scored + 1, self.timed + 1, self.left - 1
        if self.display.correct is not None:
            self.right += bool(self.display.correct(index, result))
        self._postfix()
        self.bar.update(1)
        elapsed = time.perf_counter() - self.start
        enough = self.timed >= self.display.first_items or elapsed >= self.display.first_seconds
        if self.show and not self.forecast_printed and (enough or self.left == 0):
            self.forecast_printed = True
            per_item = elapsed / self.timed
            line = forecast_line(
                self.display, per_item, self.timed, self.total, self.left, self.world
            )
            self.bar.write(line)

    def close(self) -> None:
        self.bar.close()


# batch_fn(items, keep): score every item of ``items``, calling keep(position in items, result) as
# each one is done, in any order (many items per forward pass: minillada.sampling.answer's
# generate_answers)
BatchFn = Callable[[Sequence[T], Callable[[int, R], None]], None]


def _score(
    fn: Callable[[T], R] | None,
    todo: Sequence[tuple[int, T]],
    watch: _Watch,
    keep: Callable[[int, R], None],
    batch_fn: BatchFn | None = None,
) -> None:
    """Score ``todo``, handing each result to ``keep`` as soon as it is done: in order, one call
    of ``fn`` per item, or all at once through ``batch_fn``."""

    def done(i: int, result: R) -> None:
        keep(i, result)
        watch.update(i, result)

    try:
        if batch_fn is not None:
            indices = [i for i, _ in todo]
            batch_fn([item for _, item in todo], lambda k, result: done(indices[k], result))
        else:
            for i, item in todo:
                done(i, fn(item))
    finally:
        watch.close()


def evaluate_sharded(
    fn: Callable[[T], R] | None,
    items: Sequence[T],
    progress: bool = False,
    *,
    display: Display | None = None,
    store: ResultsStore | None = None,
    batch_fn: BatchFn | None = None,
) -> list[R]:
    """``[fn(x) for x in items]``, computed with each process scoring its ``shard`` of the items;
    every rank returns the full list, in item order. With ``batch_fn`` (then ``fn`` may be None)
    each process hands its whole share to ``batch_fn(items, keep)``, which scores many items per
    forward pass and calls ``keep(position, result)`` as each is done, in any order: every result
    is kept (and written to the results file) the moment it exists.

    Without ``store`` the shares are ``gather``-ed in memory (one collective at the end). With
    ``store`` each finished item is appended to a results file as it is done, a restart skips the
    items already there, no collective runs, and the list returned is decoded from the files
    (see the module docstring). ``progress`` shows rank 0's bar (it counts rank 0's share, about
    ``len(items) / world`` items; the other ranks advance at the same pace) and prints the
    forecast line. With more than one process every rank must call this with the same items."""
    display = display or Display()
    rank, world = rank_and_world()
    mine = shard(items, rank, world)
    show = progress and rank == 0  # one bar, not one per process
    if store is None:
        local: list[tuple[int, R]] = []
        watch = _Watch(display, show, len(mine), {}, len(items))
        _score(fn, mine, watch, lambda i, result: local.append((i, result)), batch_fn)
        return gather(local, len(items))

    own = store.path if world == 1 else rank_path(store.path, rank, world)
    with ResultsFile.open(own, store.fingerprint) as file:
        ours = {i for i, _ in mine}
        strays = sorted(set(file.done) - ours)
        if strays:
            raise ResultsFileError(
                f"{own} holds indices {_listed(strays)} that are not this rank's share of "
                f"{len(items)} items (rank {rank} of {world}): it was written for other items. "
                "Move it away, or write this run to another file."
            )
        done = {i: store.decode(r) for i, r in file.done.items()}
        if show and done:
            print(f"resuming {own.name}: {len(done)} of {len(mine)} items already there")
        todo = [(i, item) for i, item in mine if i not in done]
        watch = _Watch(display, show, len(mine), done, len(items))
        _score(fn, todo, watch, lambda i, result: file.append(i, store.encode(result)), batch_fn)
    if world == 1:
        _, pairs = read_results(own)
        merged = merge_shards([pairs], len(items))
    else:
        merged = merge_result_files(
            store.path,
            len(items),
            world,
            store.fingerprint,
            wait_seconds=store.wait_seconds,
            poll_seconds=store.poll_seconds,
            write=rank == 0,
        )
    return [store.decode(r) for r in merged]


def rank_files(path: str | Path) -> dict[int, list[Path]]:
    """The per-rank results files found beside ``path``, by world size: {world: [rank files]}."""
    path = Path(path)
    found: dict[int, list[Path]] = {}
    for candidate in sorted(path.parent.glob(f"{path.stem}.rank*-of-*.jsonl")):
        rank, _, world = candidate.name[len(path.stem) + 5 : -6].partition("-of-")
        if rank.isdigit() and world.isdigit():
            found.setdefault(int(world), []).append(candidate)
    return found


def merge_result_files(
    path: str | Path,
    total: int,
    world: int,
    fingerprint: dict | None = None,
    *,
    wait_seconds: float = 0.0,
    poll_seconds: float = 1.0,
    write: bool = True,
) -> list[dict]:
    """The results of a run of ``world`` processes, read from their files beside ``path``
    (``rank_path``) and put in item order; with ``write``, also written to ``path``.

    Waits up to ``wait_seconds`` for every rank's file to hold its whole share (a torn last line
    is a write in progress, left out). Every file must carry ``fingerprint`` (by default the first
    file's), and together they must hold every index of ``range(total)`` exactly once
    (``merge_shards``). Raises TimeoutError naming the ranks still short."""
    path = Path(path)
    deadline = time.monotonic() + wait_seconds
    seen: dict[Path, tuple[tuple[int, int], tuple[dict | None, list]]] = {}

    def read(file: Path) -> tuple[dict | None, list[tuple[int, dict]]]:
        """A rank's file, parsed again only when it has changed since the last look."""
        try:
            stat = file.stat()
        except FileNotFoundError:
            return None, []
        key = (stat.st_size, stat.st_mtime_ns)
        if file not in seen or seen[file][0] != key:
            seen[file] = (key, read_results(file))
        return seen[file][1]

    while True:
        per_rank, short = [], []
        for rank in range(world):
            file = rank_path(path, rank, world)
            found, pairs = read(file)
            if found is not None:
                fingerprint = fingerprint if fingerprint is not None else found
                check_fingerprint(file, fingerprint, found)
            share = len(range(rank, total, world))
            if found is None or len(pairs) < share:
                state = "no file yet" if found is None else f"{len(pairs)} of {share} items"
                short.append(f"rank {rank}: {state} ({file.name})")
            per_rank.append(pairs)
        if not short:
            break
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"The results of {world} processes are not all there after "
                f"{wait_seconds / 3600:.2g} h: {'; '.join(short)}. If that run is still going, "
                "merge once it ends (cli.evaluate --merge); if it died, rerun the same command "
                "with the same number of processes: it resumes from these files."
            )
        time.sleep(poll_seconds)
    merged = merge_shards(per_rank, total)
    if write:
        assert fingerprint is not None  # every rank file has a header by now
        write_results(path, fingerprint, enumerate(merged))
    return merged
