"""python -m minillada.cli.evaluate survives being killed: a run killed (SIGKILL) once its results
file holds two answers, then started again with the same command, ends with the answers of an
uninterrupted run, in one process and in two gloo processes under torchrun; the per-rank files
merge with --merge alone; the settings are named in the result; another run's file is refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minillada.cli.evaluate import main
from minillada.evaluation.results_file import rank_path, read_results

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["iLLaDA-8B-Instruct", "--task", "gsm8k", "--limit", "6", "--budget", "32",
        "--dtype", "float32"]  # fmt: skip


def _env() -> dict[str, str]:
    """One CPU thread per process (as the in-process reference below), gloo on the loopback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TQDM_DISABLE": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun() -> list[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node",
            "2", "--master_addr", "127.0.0.1", "--master_port", str(port)]  # fmt: skip


def _without_time(pairs: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Item lines in index order, without the seconds each took (what two runs differ in)."""
    return sorted((i, {k: v for k, v in r.items() if k != "seconds"}) for i, r in pairs)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, gsm8k_test):
    """The reference: one uninterrupted run in this process, on one CPU thread."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WORLD_SIZE", raising=False)
        mp.setattr(torch.cuda, "is_available", lambda: False)
        torch.set_num_threads(1)
        try:
            result = main([*ARGS, "--data", str(gsm8k_test), "--stand-in", str(folder / "si"),
                           "--out", str(folder / "run.json")])  # fmt: skip
        finally:
            torch.set_num_threads(threads)
    fingerprint, pairs = read_results(folder / "run.jsonl")
    return result, fingerprint, pairs


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (torchrun's workers), read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # "pid (name) state ppid ...": the name may hold spaces, so split after its ")"
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
    return found


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _kill_after_two_answers(
    command: list[str], files: list[Path], log: Path, workers_expected: int
) -> dict:
    """Start ``command``, SIGKILL it and every process it started as soon as ``files`` hold two
    answers between them; return what each file held then. torchrun starts each worker in a
    session of its own, so killing torchrun's process group alone would leave the workers
    running to the end of the run: each worker's group is killed too."""
    if not Path("/proc/self/stat").is_file():
        pytest.skip("finding torchrun's workers needs Linux's /proc")
    with open(log, "w") as err:
        process = subprocess.Popen(
            command, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True,  # a process group of its own, killed below
        )  # fmt: skip
    deadline = time.monotonic() + 120
    workers: list[int] = []
    try:
        while sum(len(read_results(f)[1]) for f in files) < 2:
            if process.poll() is not None:
                tail = log.read_text()[-3000:]
                pytest.fail(f"the run ended (code {process.returncode}) before its kill:\n{tail}")
            if time.monotonic() > deadline:
                pytest.fail("no two answers within 120 s")
            time.sleep(0.005)
        workers = _children(process.pid)
    finally:
        for pid in workers:
            os.killpg(pid, signal.SIGKILL)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert len(workers) == workers_expected, f"expected {workers_expected} workers: {workers}"
    while not all(_gone(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} still alive after SIGKILL"
        time.sleep(0.01)
    at_kill = {f: read_results(f)[1] for f in files}
    time.sleep(0.5)  # nothing writes any more: the run is really dead
    assert {f: read_results(f)[1] for f in files} == at_kill
    return at_kill


def _run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _check_resumed(out: Path, at_kill: dict, uninterrupted) -> None:
    result, fingerprint, pairs = uninterrupted
    assert sum(map(len, at_kill.values())) < 6, "the kill came after the last answer"
    for file, kept in at_kill.items():  # the restart skipped them: the lines are still there
        assert read_results(file)[1][: len(kept)] == kept
    found, final = read_results(out.with_suffix(".jsonl"))
    assert found == fingerprint  # the same model, settings and items
    assert _without_time(final) == _without_time(pairs)
    saved = json.loads(out.read_text())
    assert saved["texts"] == result["texts"] and len(saved["texts"]) == 6
    assert (saved["correct"], saved["n"]) == (result["correct"], 6)
    assert saved["summary"].split("\n")[:2] == result["summary"].split("\n")[:2]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, gsm8k_test, uninterrupted):
    out = tmp_path / "run.json"
    command = [sys.executable, "-m", "minillada.cli.evaluate", *ARGS, "--data", str(gsm8k_test),
               "--stand-in", str(tmp_path / "si"), "--out", str(out)]  # fmt: skip
    at_kill = _kill_after_two_answers(command, [out.with_suffix(".jsonl")], tmp_path / "log", 0)
    done = _run(command)
    finished = len(at_kill[out.with_suffix(".jsonl")])
    assert f"resuming run.jsonl: {finished} of 6 items already there" in done.stdout
    _check_resumed(out, at_kill, uninterrupted)


@pytest.mark.slow
def test_a_killed_torchrun_resumes_to_the_uninterrupted_result(tmp_path, gsm8k_test, uninterrupted):
    out = tmp_path / "run.json"
    cli = ["-m", "minillada.cli.evaluate", *ARGS, "--data", str(gsm8k_test),
           "--stand-in", str(tmp_path / "si"), "--out", str(out)]  # fmt: skip
    files = [rank_path(out.with_suffix(".jsonl"), r, 2) for r in range(2)]
    at_kill = _kill_after_two_answers(_torchrun() + cli, files, tmp_path / "log", 2)
    assert not out.with_suffix(".jsonl").exists()  # killed before the merge
    done = _run(_torchrun() + cli)
    assert done.stdout.count("2 process(es)") == 1  # rank 0 alone prints
    assert [[i for i, _ in read_results(f)[1]] for f in files] == [[0, 2, 4], [1, 3, 5]]
    assert json.loads(out.read_text())["world_size"] == 2
    _check_resumed(out, at_kill, uninterrupted)
