"""Sharded evaluation: the shards cover every item once, gather restores the order and refuses a
short or doubled result, and two gloo processes give exactly the single-process scores."""

from __future__ import annotations

import os
import pickle
import socket
import threading
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

from minillada.diffusion.confidence import ConfidenceScore, confidence_score
from minillada.evaluation.parallel import (
    Display,
    ResultsStore,
    evaluate_sharded,
    forecast_line,
    gather,
    merge_result_files,
    rank_files,
    shard,
)
from minillada.evaluation.results_file import (
    ResultsFile,
    ResultsFileError,
    rank_path,
    read_results,
)
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


# --- runs kept in a results file ---------------------------------------------------------------


def _store(path, fingerprint=None, **kw) -> ResultsStore:
    """Squares kept as {"y": y}."""
    fingerprint = fingerprint or {"task": "square", "data": {"n": 5}}
    return ResultsStore(path, fingerprint, lambda y: {"y": y}, lambda d: d["y"], **kw)


class _Killed(Exception):
    """Stands for the process dying in the middle of a run."""


def test_a_file_backed_run_resumes_where_it_stopped(tmp_path):
    items, calls = [3, 1, 4, 1, 5], []

    def dies_at_the_third(x):
        if len(calls) == 2:
            raise _Killed
        calls.append(x)
        return x * x

    path = tmp_path / "r.jsonl"
    with pytest.raises(_Killed):
        evaluate_sharded(dies_at_the_third, items, store=_store(path))
    assert [i for i, _ in read_results(path)[1]] == [0, 1]  # what was done is on disk

    def counted(x):
        calls.append(x)
        return x * x

    calls.clear()
    assert evaluate_sharded(counted, items, store=_store(path)) == [9, 1, 16, 1, 25]
    assert calls == [4, 1, 5]  # only the items the killed run had not finished
    assert read_results(path)[1] == [(i, {"y": y}) for i, y in enumerate([9, 1, 16, 1, 25])]
    calls.clear()
    assert evaluate_sharded(counted, items, store=_store(path)) == [9, 1, 16, 1, 25]
    assert calls == []  # a finished run computes nothing again


def test_a_file_with_items_outside_this_run_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsFile.open(path, _store(path).fingerprint) as f:
        f.append(7, {"y": 49})
    with pytest.raises(ResultsFileError, match=r"holds indices \[7\] that are not this rank's"):
        evaluate_sharded(lambda x: x, [1, 2], store=_store(path))


def _rank_file(path, rank, world, pairs, fingerprint=None):
    with ResultsFile.open(rank_path(path, rank, world), _store(path, fingerprint).fingerprint) as f:
        for i, y in pairs:
            f.append(i, {"y": y})


def test_merge_puts_the_rank_files_in_order_and_writes_the_merged_file(tmp_path):
    path = tmp_path / "r.jsonl"
    _rank_file(path, 0, 2, [(4, 16), (0, 0), (2, 4)])  # finished in any order
    _rank_file(path, 1, 2, [(1, 1), (3, 9)])
    assert merge_result_files(path, 5, 2) == [{"y": y} for y in [0, 1, 4, 9, 16]]
    fingerprint, pairs = read_results(path)
    assert fingerprint == _store(path).fingerprint
    assert pairs == [(i, {"y": i * i}) for i in range(5)]
    assert rank_files(path) == {2: [rank_path(path, 0, 2), rank_path(path, 1, 2)]}


def test_merge_names_the_ranks_still_short(tmp_path):
    path = tmp_path / "r.jsonl"
    _rank_file(path, 0, 3, [(0, 0), (3, 9)])
    _rank_file(path, 1, 3, [(1, 1)])
    with pytest.raises(TimeoutError) as err:
        merge_result_files(path, 5, 3)
    message = str(err.value)
    assert "rank 1: 1 of 2 items (r.rank1-of-3.jsonl)" in message
    assert "rank 2: no file yet (r.rank2-of-3.jsonl)" in message and "rank 0" not in message
    assert "rerun the same command with the same number of processes" in message
    assert not path.exists()


def test_merge_refuses_a_rank_file_of_another_run(tmp_path):
    path = tmp_path / "r.jsonl"
    _rank_file(path, 0, 2, [(0, 0)])
    _rank_file(path, 1, 2, [(1, 1)], fingerprint={"task": "cube", "data": {"n": 5}})
    with pytest.raises(ResultsFileError, match=r"task \(file: \"cube\", this run: \"square\"\)"):
        merge_result_files(path, 2, 2)


def test_merge_waits_for_a_slow_rank(tmp_path):
    path = tmp_path / "r.jsonl"
    _rank_file(path, 0, 2, [(0, 0), (2, 4)])
    _rank_file(path, 1, 2, [(1, 1)])
    late = threading.Timer(0.3, lambda: _rank_file(path, 1, 2, [(3, 9)]))
    late.start()
    try:
        merged = merge_result_files(path, 4, 2, wait_seconds=30, poll_seconds=0.02)
    finally:
        late.join()
    assert merged == [{"y": y} for y in [0, 1, 4, 9]]


def test_the_forecast_scales_one_ranks_rate_to_the_run_and_the_full_set():
    display = Display("GSM8K", 1319, "GSM8K problems")
    assert forecast_line(display, 20.0, 2, 6, 4, 1) == (
        "GSM8K: 20.00 s per item (the first 2): the 6 requested items take about 2.0 min "
        "(1.3 min left), all 1,319 GSM8K problems about 440 min (7.3 h), in one process"
    )
    # two processes: each scores half (rounded up) of the items at this rate
    assert forecast_line(display, 20.0, 2, 6, 1, 2).endswith(
        "about 1.0 min (20 s left), all 1,319 GSM8K problems about 220 min (3.7 h), on 2 "
        "processes at this rate each"
    )
    assert "take about 0.1 s (0.0 s left)" in forecast_line(display, 0.01, 2, 6, 4, 1)
    assert "all" not in forecast_line(Display("toy"), 1.0, 1, 3, 2, 1)  # no full set known


def test_progress_shows_a_bar_that_stays_and_one_forecast_line(capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    display = Display("toy", 100, "toys", correct=lambda i, y: y % 2 == 1)
    assert evaluate_sharded(lambda x: x * x, [3, 1, 4, 1, 5], True, display=display) == [
        9, 1, 16, 1, 25,
    ]  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("s per item (the first 2): the 5 requested items take about") == 1
    assert "all 100 toys about" in out
    last = out.rsplit("\r", 1)[-1]  # the bar as it stays on screen
    assert "5/5" in last and "item/s" in last and "acc 4/5 = 80.0%" in last
    # a slow first item: the forecast comes after it, without waiting for a second
    evaluate_sharded(abs, [1, 2, 3], True, display=Display("slow", first_seconds=0.0))
    assert "slow: " in (out := capsys.readouterr().out) and "(the first 1)" in out
    evaluate_sharded(abs, [1, 2, 3], False, display=display)
    assert capsys.readouterr().out == ""  # no progress, no output


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


def _no_collective(*args, **kwargs):
    raise AssertionError("a collective ran during a file-backed run")


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
        items, model = _items(), _model().to(device)
        scores = _score_all(model, items)
        mine = [i for i, _ in shard(items)]
        # a rank that drops an item: every rank must refuse the short result
        short = [(i, 0.0) for i in mine[: -1 if rank == 1 else None]]
        try:
            gather(short, len(items))
            refused = ""
        except RuntimeError as err:
            refused = str(err)
        # the same scores kept in files, with every collective made to fail: none may run
        for name in ("all_gather_object", "all_gather", "all_reduce", "barrier", "broadcast"):
            setattr(dist, name, _no_collective)
        store = ResultsStore(
            Path(folder) / "scores.jsonl",
            {"task": "confidence scores"},
            asdict,
            lambda d: ConfidenceScore(**d),
            poll_seconds=0.02,
        )
        from_files = evaluate_sharded(
            lambda item: confidence_score(model, *item, mask_id=MASK), items, store=store
        )
        record = dict(
            world=rank_and_world(), mine=mine, scores=scores, refused=refused, files=from_files
        )
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
        assert r["files"] == expected  # through the files, with no collective
        assert "missing indices: [5]" in r["refused"] and "rank 1: 2" in r["refused"]
    assert [i for i, _ in read_results(tmp_path / "scores.rank1-of-2.jsonl")[1]] == [1, 3, 5]
    merged = read_results(tmp_path / "scores.jsonl")[1]  # written by rank 0
    assert merged == [(i, asdict(score)) for i, score in enumerate(expected)]
