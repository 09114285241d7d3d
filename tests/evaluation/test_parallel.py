"""Sharded evaluation: the shards cover every item once, gather restores the order and refuses a
short or doubled result, and two gloo processes give exactly the single-process scores."""

from __future__ import annotations

import os
import pickle
import socket
import time
from collections import Counter

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

from minillada.diffusion.confidence import confidence_score
from minillada.evaluation.parallel import evaluate_sharded, gather, shard
from minillada.models.llada import LLaDAModel, preset
from minillada.training.distributed import rank_and_world, setup_distributed

MASK = 511
WORLD = 2


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 7, 10])
def test_shards_cover_every_index_once_and_are_balanced(world, n):
    items = [f"item{i}" for i in range(n)]
    shards = [shard(items, rank, world) for rank in range(world)]
    counts = Counter(i for s in shards for i, _ in s)
    assert sorted(counts) == list(range(n)) and set(counts.values()) <= {1}
    assert all(item == items[i] for s in shards for i, item in s)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert [i for i, _ in shards[0]] == list(range(0, n, world))  # strided, not blocks


def test_shard_defaults_to_this_process_and_rejects_a_bad_rank():
    assert rank_and_world() == (0, 1)  # no process group in the test process
    assert shard("abc") == [(0, "a"), (1, "b"), (2, "c")]
    for rank, world in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(ValueError, match=f"rank={rank}|world={world}"):
            shard("abc", rank, world)


def test_gather_in_a_world_of_one_restores_the_order():
    local = [(2, "c"), (0, "a"), (1, "b")]
    assert gather(local, 3) == ["a", "b", "c"]
    assert gather([], 0) == []


@pytest.mark.parametrize(
    "local, message",
    [
        ([(0, "a"), (2, "c")], r"missing indices: \[1\]"),
        ([(0, "a"), (1, "b"), (1, "b"), (2, "c")], r"duplicated indices: \[1\]"),
        ([(0, "a"), (1, "b"), (2, "c"), (3, "d")], r"outside range\(3\): \[3\]"),
    ],
)
def test_gather_refuses_a_missing_or_doubled_index(local, message):
    with pytest.raises(RuntimeError, match=message):
        gather(local, 3)


def test_gather_lists_many_missing_indices_briefly():
    with pytest.raises(RuntimeError, match=r"missing indices: \[0, 1, .*, 9, \.\.\. 90 more\]"):
        gather([], 100)


def test_evaluate_sharded_in_one_process_is_a_plain_map():
    items = [3, 1, 4, 1, 5]
    assert evaluate_sharded(lambda x: x * x, items, progress=True) == [9, 1, 16, 1, 25]


# --- two processes on gloo --------------------------------------------------------------------


def _model() -> LLaDAModel:
    """The tests' tiny LLaDA (conftest's make_tiny_llada with a mask id), built here so that the
    spawned workers, which do not load conftest, make the same one."""
    cfg = preset("tiny", mask_token_id=MASK)
    return LLaDAModel(cfg, generator=torch.Generator().manual_seed(0)).eval()


def _items() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """7 (context, answer) pairs of different lengths: an odd count, so the shards are 4 and 3."""
    g = torch.Generator().manual_seed(1)
    lengths = [(3, 1), (12, 4), (1, 2), (20, 3), (6, 1), (9, 5), (2, 2)]
    return [
        (torch.randint(0, 500, (p,), generator=g), torch.randint(0, 500, (a,), generator=g))
        for p, a in lengths
    ]


def _score_all(model, items):
    return evaluate_sharded(lambda item: confidence_score(model, *item, mask_id=MASK), items)


def _worker(rank: int, port: int, folder: str) -> None:
    """One of the two processes, set up as torchrun would, through training's own helper."""
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    device = setup_distributed()
    try:
        items = _items()
        scores = _score_all(_model().to(device), items)
        mine = [i for i, _ in shard(items)]
        # a rank that drops an item: every rank must refuse the short result
        short = [(i, 0.0) for i in mine[: -1 if rank == 1 else None]]
        try:
            gather(short, len(items))
            refused = ""
        except RuntimeError as err:
            refused = str(err)
        record = dict(world=rank_and_world(), mine=mine, scores=scores, refused=refused)
        with open(os.path.join(folder, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump(record, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_give_exactly_the_single_process_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the workers use gloo on the CPU
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    context = tmp.start_processes(
        _worker,
        args=(_free_port(), str(tmp_path)),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 120  # a hung collective fails the test instead of the suite
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.terminate()
            pytest.fail("the two workers did not finish within 120 s")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same single-threaded kernels as the workers
    try:
        expected = _score_all(_model(), _items())
    finally:
        torch.set_num_threads(threads)

    records = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(WORLD)]
    assert [r["world"] for r in records] == [(0, 2), (1, 2)]
    assert [r["mine"] for r in records] == [[0, 2, 4, 6], [1, 3, 5]]  # each scored its share
    for r in records:  # both ranks hold the full list, equal bit for bit (scores, orders, losses)
        assert r["scores"] == expected
        assert "missing indices: [5]" in r["refused"] and "rank 1: 2" in r["refused"]
