"""python -m minillada.cli.evaluate on stand-ins: one process in-process, labelled as a stand-in,
and two CPU processes under torchrun giving the same texts (GSM8K) and choices (HellaSwag)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minillada.cli.evaluate import main
from minillada.evaluation.results_file import rank_path, read_results, write_results

ROOT = Path(__file__).resolve().parents[2]
GSM8K_ARGS = ["iLLaDA-8B-Instruct", "--task", "gsm8k", "--limit", "3", "--budget", "32",
              "--dtype", "float32"]  # fmt: skip


def _hellaswag_line(ind: int, label: int, ctx_a: str, ctx_b: str, endings: list[str]) -> str:
    """One line of hellaswag_val.jsonl, with every field the released file has."""
    return json.dumps({
        "ind": ind, "activity_label": "Baking cookies", "ctx_a": ctx_a, "ctx_b": ctx_b,
        "ctx": f"{ctx_a} {ctx_b}", "split": "val", "split_type": "indomain", "label": label,
        "endings": endings, "source_id": f"activitynet~v_{ind}",
    })  # fmt: skip


@pytest.fixture
def hellaswag_file(tmp_path):
    path = tmp_path / "hellaswag_val.jsonl"
    lines = [
        _hellaswag_line(24, 0, "A woman mixes flour in a bowl.", "she",
                        ["pours it on a tray.", "rides a horse.", "paints [title] a wall.",
                         "swims away."]),
        _hellaswag_line(92, 3, "A man is on a roof.", "he",
                        ["eats.", "sings a song.", "jumps.", "starts pulling up roofing."]),
        _hellaswag_line(106, 1, "The boy sits at the piano.", "then, he",
                        ["reads.", "plays a short song.", "sleeps on it.", "leaves."]),
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def one_cpu_thread(monkeypatch):
    """The in-process run on the CPU with one thread, as each torchrun process below runs, so
    that both compute the same float32 operations in the same order."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _torchrun(args: list[str], tmp_path: Path) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = (
        [str(torchrun)] if torchrun.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TQDM_DISABLE": "1"}
    if sys.platform.startswith("linux"):  # gloo on the loopback interface
        env["GLOO_SOCKET_IFNAME"] = "lo"
    env.pop("WORLD_SIZE", None)
    out = tmp_path / "two.json"
    done = subprocess.run(
        [*launcher, "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), "-m", "minillada.cli.evaluate", *args,
         "--stand-in", str(tmp_path / "two"), "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("2 process(es)") == 1  # rank 0 alone prints
    return json.loads(out.read_text())


def test_gsm8k_in_process_is_labelled_as_a_stand_in(tmp_path, capsys, one_cpu_thread, gsm8k_test):
    out = tmp_path / "one.json"
    result = main([*GSM8K_ARGS, "--stand-in", str(tmp_path / "si"), "--out", str(out)])
    assert result["model"] == "stand-in for iLLaDA-8B-Instruct" and result["world_size"] == 1
    assert result["n"] == 3 and len(result["texts"]) == 3
    assert result["summary"].startswith("stand-in for iLLaDA-8B-Instruct: GSM8K ")
    assert "variable length, budget 32, blocks of 32, 32 steps per block" in result["summary"]
    saved = json.loads(out.read_text())
    assert saved["texts"] == result["texts"] and saved["model"] == result["model"]
    assert saved["interval"] == list(result["interval"])
    assert saved["settings"]["sampler"] == "exact" and saved["settings"]["gen_length"] == 32
    assert saved["settings"]["describe"] in result["summary"]
    assert read_results(tmp_path / "one.jsonl")[0] == saved["fingerprint"]  # every item kept
    assert len(read_results(tmp_path / "one.jsonl")[1]) == 3
    printed = capsys.readouterr().out
    assert "paper: 89.0% (0-shot, chat template" in printed and "1 process(es)" in printed
    assert (tmp_path / "si" / "config.json").is_file()  # the stand-in was written there


def test_a_model_without_a_stand_in_is_refused(tmp_path, one_cpu_thread):
    with pytest.raises(SystemExit, match="No stand-in for LLaDA-8B-Base"):
        main(["LLaDA-8B-Base", "--task", "gsm8k", "--stand-in", str(tmp_path / "x")])


@pytest.mark.slow
def test_gsm8k_under_torchrun_gives_the_same_texts(tmp_path, one_cpu_thread, gsm8k_test):
    one = main([*GSM8K_ARGS, "--stand-in", str(tmp_path / "one")])
    two = _torchrun(GSM8K_ARGS, tmp_path)
    assert two["world_size"] == 2 and two["model"] == "stand-in for iLLaDA-8B-Instruct"
    assert two["texts"] == one["texts"] and two["n"] == one["n"] == 3
    assert two["correct"] == one["correct"]


def _hellaswag_args(path: Path) -> list[str]:
    return ["iLLaDA-8B-Base", "--task", "hellaswag", "--data", str(path), "--limit", "3",
            "--dtype", "float32"]  # fmt: skip


def test_hellaswag_in_process(tmp_path, capsys, one_cpu_thread, hellaswag_file):
    result = main([*_hellaswag_args(hellaswag_file), "--stand-in", str(tmp_path / "one")])
    assert result["model"] == "stand-in for iLLaDA-8B-Base" and result["n"] == 3
    choices = result["choices"]
    assert len(choices) == 3 and all(0 <= c < 4 for pair in choices for c in pair)
    assert result["acc"] == sum(c[0] == y for c, y in zip(choices, [0, 3, 1], strict=True)) / 3
    assert "paper: 76.6% (0-shot, confidence-based scoring" in capsys.readouterr().out


@pytest.mark.slow
def test_hellaswag_under_torchrun_gives_the_same_choices(tmp_path, one_cpu_thread, hellaswag_file):
    one = main([*_hellaswag_args(hellaswag_file), "--stand-in", str(tmp_path / "one")])
    two = _torchrun(_hellaswag_args(hellaswag_file), tmp_path)
    assert two["world_size"] == 2 and two["n"] == 3
    assert two["choices"] == [list(c) for c in one["choices"]]
    assert (two["acc"], two["acc_norm"]) == (one["acc"], one["acc_norm"])


def test_threshold_and_cache_reach_the_sampler_and_are_named(tmp_path, one_cpu_thread, gsm8k_test):
    args = [*GSM8K_ARGS[:4], "1", *GSM8K_ARGS[5:], "--threshold", "0.9", "--cache", "dual"]
    result = main([*args, "--stand-in", str(tmp_path / "si")])
    settings = result["settings"]
    assert (settings["sampler"], settings["threshold"], settings["cache"]) == (
        "approximate", 0.9, "dual",
    )  # fmt: skip
    assert "threshold 0.9, dual cache" in settings["describe"]
    assert settings["describe"] in result["summary"]


def test_batch_size_reaches_the_sampler_and_is_named(tmp_path, one_cpu_thread, gsm8k_test):
    """--batch-size 2 answers the 3 problems 2 rows at a time (the equality of batched and batch-1
    answers is tested in float64 in tests/sampling); the result names the batch size, and the
    results file refuses to be resumed at another one."""
    out = tmp_path / "b.json"
    args = [*GSM8K_ARGS, "--stand-in", str(tmp_path / "si"), "--out", str(out)]
    result = main([*args, "--batch-size", "2"])
    assert result["n"] == 3 and len(result["texts"]) == 3
    assert result["settings"]["batch_size"] == 2 and "2 prompts per pass" in result["summary"]
    assert len(read_results(tmp_path / "b.jsonl")[1]) == 3
    with pytest.raises(SystemExit, match=r"settings.batch_size \(file: 2, this run: 3\)"):
        main([*args, "--batch-size", "3"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--threshold", "1.5"], "threshold 1.5 is not a probability"),
        (["--out", "x.jsonl"], "expected the summary's path"),
        (["--batch-size", "0"], "--batch-size 0: expected at least 1"),
    ],
)
def test_bad_settings_are_refused_before_loading(tmp_path, one_cpu_thread, extra, message):
    stand_in = tmp_path / "never"
    with pytest.raises(SystemExit, match=message):
        main([*GSM8K_ARGS, "--stand-in", str(stand_in), *extra])
    assert not stand_in.exists()  # nothing was written or loaded


def test_threshold_is_refused_for_hellaswag(tmp_path, one_cpu_thread, hellaswag_file):
    with pytest.raises(SystemExit, match="HellaSwag scores the endings without sampling"):
        main([*_hellaswag_args(hellaswag_file), "--cache", "prefix"])


def test_another_runs_results_file_is_refused(tmp_path, one_cpu_thread, gsm8k_test):
    args = [*GSM8K_ARGS[:4], "1", *GSM8K_ARGS[5:], "--stand-in", str(tmp_path / "si")]
    main([*args, "--out", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit) as err:
        main([*args, "--out", str(tmp_path / "r.json"), "--budget", "64"])
    assert "settings.gen_length (file: 32, this run: 64)" in str(err.value)
    assert "another --out" in str(err.value)


def test_merge_reads_the_rank_files_without_the_model(tmp_path, capsys, one_cpu_thread, gsm8k_test):
    one = main([*GSM8K_ARGS, "--stand-in", str(tmp_path / "si"), "--out", str(tmp_path / "a.json")])
    fingerprint, pairs = read_results(tmp_path / "a.jsonl")
    path = tmp_path / "b.jsonl"  # the files two processes would have left for --out b.json
    merge = [*GSM8K_ARGS, "--out", str(tmp_path / "b.json"), "--merge"]
    with pytest.raises(SystemExit, match=r"found nothing: check --out"):
        main(merge)
    write_results(rank_path(path, 0, 2), fingerprint, pairs[0:1])  # one answer short
    write_results(rank_path(path, 1, 2), fingerprint, pairs[1::2])
    with pytest.raises(SystemExit, match=r"rank 0: 1 of 2 items \(b.rank0-of-2.jsonl\)"):
        main(merge)
    write_results(rank_path(path, 0, 2), fingerprint, pairs[0::2])
    capsys.readouterr()
    merged = main(merge)
    assert merged["texts"] == one["texts"] and merged["world_size"] == 2
    assert read_results(path) == (fingerprint, pairs)
    assert json.loads((tmp_path / "b.json").read_text())["texts"] == one["texts"]
    assert "merged the files of 2 process(es)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"data.n \(file: 3, this run: 2\)"):
        main([*merge, "--limit", "2"])
