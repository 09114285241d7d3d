"""Lesson 7's real-weights path rehearsed at full size on one GPU, in one command (see
bench/gpu_rehearsal.md).

    PYTHONPATH=. MINILLADA_DATA_DIR=shared/data timeout 540 python bench/gpu_rehearsal.py  # GPU
    python bench/gpu_rehearsal.py --dry-run --out /tmp/r.json --workdir /tmp/w      # small, CPU

What it does, in order, timing every step (the JSON, ``--out``, is rewritten after each one, so a
run cut short still leaves what it measured; a step that fails is recorded with its traceback and
the run goes on with the steps that do not need it):

1. write:  a random bf16 iLLaDA-8B-Instruct snapshot at the published size (7.6B parameters,
           vocabulary rows 155,136) in the released layout under ``--workdir``: built on the GPU in
           bf16, written by ``save_hf_checkpoint`` in shards of at most 5 GB as the hub's writer
           does, with the tokenizer, generation_config.json and config.json field set of the
           project's rehearsal snapshot (``minillada.checkpoints.rehearsal``), and its tilt of the
           end-of-turn row so that answers end. iLLaDA-8B-Base is the same shards (symbolic links)
           with the Base rehearsal's tokenizer files.
2. inspect: ``MINILLADA_WEIGHTS_DIR`` and ``MINILLADA_REHEARSAL=1`` set; ``inspect_snapshot``'s
           report (at full size the architecture is the published one: no NOTE expected).
3. lesson 7's calls: ``open_released`` (load seconds, peak GPU and host memory), the
           ``record_top_k`` fingerprint, one ``generate_answer`` at ILLADA_INSTRUCT with the budget
           cut to 256, a two-turn ``Chat``, ``run_gsm8k`` on 5 problems, the forward pass's
           milliseconds at batch 1 over the lengths GSM8K needs, then iLLaDA-8B-Base opened the same
           way and ``run_hellaswag`` ("confidence" and "mc" with 8 samples), and the CLI
           ``torchrun --nproc_per_node=1 -m minillada.cli.evaluate`` as a subprocess.
4. projection: minutes for the full GSM8K-Instruct (1,319 problems, budget 2048, blocks of 32,
           one token per pass) at answers of 300, 600 and 1,000 tokens, and for the full HellaSwag
           (10,042 items) with the confidence score, from the measured ms per pass.

Random weights make the timings and the memory those of the real model (the arithmetic does not
depend on the values) but the text meaningless. ``--dry-run`` runs every step at a small size on
the CPU in float32 (the test runs it); it is not a measurement of anything but the script.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

from minillada.checkpoints.devices import memory_needed, positions_per_answer
from minillada.checkpoints.hf import INDEX_NAME, read_hf_config, save_hf_checkpoint
from minillada.checkpoints.rehearsal import (
    END_TILT,
    REHEARSAL_ENV,
    tilt_towards,
    write_rehearsal,
)
from minillada.checkpoints.released import (
    WEIGHTS_ENV,
    inspect_snapshot,
    open_released,
    released_folder,
)
from minillada.data.downloads import DATA_DIR_ENV, DatasetError, dataset_path
from minillada.data.tokenizer import LLaDATokenizer
from minillada.evaluation.benchmarks import gsm8k_prompt, run_gsm8k, run_hellaswag
from minillada.evaluation.gsm8k import load_gsm8k
from minillada.evaluation.hellaswag import load_hellaswag, write_format_examples
from minillada.evaluation.reproduction import probe, record_top_k
from minillada.models.llada import LLaDAModel, preset
from minillada.models.sizing import count_parameters
from minillada.runtime import environment_report
from minillada.sampling.answer import ILLADA_INSTRUCT, generate_answer
from minillada.sampling.chat import Chat

ROOT = Path(__file__).resolve().parents[1]
INSTRUCT, BASE = "iLLaDA-8B-Instruct", "iLLaDA-8B-Base"
# the files of the small rehearsal snapshot that the full-size one takes as they are
SMALL_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)
MARKER = ".gpu_rehearsal"  # marks a workdir this script made (and may delete)

# the full benchmarks the projection is for
GSM8K_PROBLEMS, GSM8K_BUDGET, BLOCK = 1319, 2048, 32
GSM8K_PROMPT = 175  # assumed: the first problems' 0-shot chat prompt is ~150-200 real tokens
ANSWER_LENGTHS = (300, 600, 1000)
HELLASWAG_ITEMS, HELLASWAG_ENDINGS = 10_042, 4
HELLASWAG_CONTEXT, HELLASWAG_ENDING = 80, 20  # assumed tokens per context and per ending

SIZES = {
    "full": dict(
        shape={},
        lengths=[256, 512, 1024, 2048, 2304],
        max_shard_size="5GB",
        budget=256,
        cli_timeout=240,
    ),
    "dry": dict(
        shape=dict(d_model=128, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden_size=256,
                   vocab_size=1024, embedding_size=1024),
        lengths=[64, 128, 256],
        max_shard_size="300KB",  # 0.85 MB of bf16 weights: 3 shards
        budget=64,  # two blocks of 32: every step of the path, a quarter of the passes of 256
        cli_timeout=180,
    ),
}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------------


def gib(n: float | None) -> float | None:
    return None if n is None else round(n / 2**30, 3)


def host_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


class Run:
    """The JSON record, rewritten after every step, and the steps' timing and failures."""

    def __init__(self, out: Path, device: torch.device):
        self.out, self.device = out, device
        self.results: dict = {"steps": {}}
        self.failed: list[str] = []
        self.start = time.perf_counter()
        out.parent.mkdir(parents=True, exist_ok=True)

    def set(self, key: str, value) -> None:
        self.results[key] = value
        self.save()

    def save(self) -> None:
        self.out.write_text(json.dumps(self.results, indent=1, default=str) + "\n")

    @contextlib.contextmanager
    def step(self, name: str):
        """Time one step; its dict is recorded with seconds and peak memory, or its error."""
        data: dict = {}
        elapsed = time.perf_counter() - self.start
        print(f"[{elapsed:6.1f} s] {name} ...", flush=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        try:
            yield data
        except Exception:  # record it and go on: one GPU run should show every step it can
            data["error"] = traceback.format_exc()[-4000:]
            self.failed.append(name)
            print(f"  FAILED: {data['error']}", flush=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            data["gpu_peak_gib"] = gib(torch.cuda.max_memory_allocated(self.device))
        data["seconds"] = round(time.perf_counter() - t0, 3)
        data["host_peak_gib_so_far"] = gib(host_peak_bytes())
        self.results["steps"][name] = data
        self.save()
        print(f"          {name}: {data['seconds']:.1f} s", flush=True)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------
# 1. the snapshots
# --------------------------------------------------------------------------------------------------


def write_snapshots(
    workdir: Path, size: dict, device: torch.device, dtype: torch.dtype, data: dict
) -> None:
    """The full-size Instruct snapshot (and Base, sharing its shards) under ``workdir``."""
    small_root = workdir / "_small_rehearsal"
    small = {n: write_rehearsal(n, small_root, "local", 0) for n in (INSTRUCT, BASE)}
    small_config = read_hf_config(small[INSTRUCT])
    tokenizer = LLaDATokenizer.from_folder(small[INSTRUCT])
    config = preset(
        "illada_8b",
        **size["shape"],
        rope_theta=small_config.rope_theta,  # the rehearsal's own values, read back from its files
        rms_norm_eps=small_config.rms_norm_eps,
        eos_token_id=small_config.eos_token_id,
        pad_token_id=small_config.pad_token_id,
    )
    config.hf_extra = dict(small_config.hf_extra)  # the whole field set of a transformers save
    end_of_turn = tokenizer.end_of_turn.id

    t0 = time.perf_counter()
    model = LLaDAModel(config, device="meta", dtype=dtype)
    model.to_empty(device=device)  # random weights made on the device: no fp32 copy on the host
    model.init_weights(torch.Generator(device).manual_seed(0))
    with torch.no_grad():
        rows = model.transformer.wte.weight  # the tied head: its rows are the output rows too
        rows[tokenizer.vocab_size :] = 0.0  # ids the tokenizer cannot write: never an answer
        rows[tokenizer.mask_id] = 0.0  # the mask is never an answer, as in the rehearsal
        tilt_towards(model, end_of_turn)  # answers end after a few dozen tokens
    model.eval()
    sync(device)
    data["build_seconds"] = round(time.perf_counter() - t0, 2)
    size_gb = count_parameters(config).total * 2 / 1e9
    print(f"  built on {device} in {data['build_seconds']} s; saving {size_gb:.2f} GB", flush=True)

    folder = workdir / INSTRUCT
    if folder.exists():
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    save_hf_checkpoint(model, folder, max_shard_size=size["max_shard_size"], dtype=torch.bfloat16)
    for name in SMALL_FILES:
        shutil.copy2(small[INSTRUCT] / name, folder / name)
    data["save_seconds"] = round(time.perf_counter() - t0, 2)
    print(f"  written in {data['save_seconds']} s", flush=True)
    del model, rows
    free(device)  # one model on the GPU at a time

    base = workdir / BASE
    if base.exists():
        shutil.rmtree(base)
    base.mkdir()
    shards = sorted(p.name for p in folder.glob("model-*-of-*.safetensors"))
    for name in [*shards, INDEX_NAME, "config.json"]:
        (base / name).symlink_to(Path("..", INSTRUCT, name))
    for name in SMALL_FILES:
        shutil.copy2(small[BASE] / name, base / name)

    written = json.loads((folder / "config.json").read_text())
    small_raw = json.loads((small[INSTRUCT] / "config.json").read_text())
    index = json.loads((folder / INDEX_NAME).read_text())
    shard_bytes = {n: (folder / n).stat().st_size for n in shards}
    data.update(
        parameters=count_parameters(config).total,
        tensors_bytes=index["metadata"]["total_size"],
        shards=shard_bytes,
        largest_shard_gb=round(max(shard_bytes.values()) / 1e9, 3),
        max_shard_size=size["max_shard_size"],
        config_json=written,
        config_fields_as_small_rehearsal=sorted(written) == sorted(small_raw),
        config_fields_missing=sorted(set(small_raw) - set(written)),
        config_fields_added=sorted(set(written) - set(small_raw)),
        tokenizer_tokens=tokenizer.vocab_size,
        embedding_rows=config.vocab_rows,
        rows_zeroed_above_tokenizer=config.vocab_rows - tokenizer.vocab_size,
        end_tilt={"token": "<|im_end|>", "id": end_of_turn, "scale": END_TILT},
        base="the Instruct shards (symbolic links, so its end tilt is <|im_end|>'s too) with the "
        "Base rehearsal's tokenizer files",
    )
    shutil.rmtree(small_root)


# --------------------------------------------------------------------------------------------------
# 3. lesson 7's calls
# --------------------------------------------------------------------------------------------------


def open_quietly(name: str, device: torch.device, standins: Path, data: dict):
    """``open_released`` with its printed lines kept (and shown)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        loaded = open_released(name, device, standins)
    lines = buffer.getvalue().splitlines()
    print("\n".join("  " + line for line in lines), flush=True)
    data.update(
        printed=lines,
        real_branch=loaded.report.stand_in is None,
        note_shown=any(line.startswith("NOTE") for line in lines),
        device=str(loaded.model_device),
        dtype=str(next(loaded.model.parameters()).dtype).removeprefix("torch."),
        load_seconds=round(loaded.seconds, 3),
        load_peak_gib=gib(loaded.peak_bytes),
        load_peak_is="GPU allocated" if loaded.model_device.type == "cuda" else "host resident",
        host_peak_gib=gib(host_peak_bytes()),
    )
    if loaded.report.stand_in is not None:
        raise RuntimeError(f"{name} opened as a stand-in: {lines}")
    return loaded


def answer_record(answer, prompt_len: int) -> dict:
    return {
        "prompt_tokens": prompt_len,
        "output_tokens": answer.output_tokens,
        "computed_tokens": answer.computed_tokens,
        "stopped": answer.stopped,
        "forward_passes": answer.forward_passes,
        "positions_processed": answer.positions_processed,
        "seconds": round(answer.seconds, 3),
        "tokens_per_second": round(answer.tokens_per_second, 2),
        "ms_per_pass": round(1000 * answer.seconds / max(1, answer.forward_passes), 2),
        "peak_gib": gib(answer.peak_bytes),
        "text_head": answer.text[:200],
    }


def gsm8k_file(workdir: Path) -> tuple[Path, str]:
    """GSM8K's test split from $MINILLADA_DATA_DIR (or the cache), else 5 synthetic problems."""
    try:
        return dataset_path("gsm8k_test", download=False).resolve(), "GSM8K test split"
    except DatasetError as err:
        path = workdir / "gsm8k_synthetic.jsonl"
        lines = [
            {"question": f"A shop sells {a} boxes of {b} pencils. How many pencils is that?",
             "answer": f"{a} * {b} = <<{a}*{b}={a * b}>>{a * b}\n#### {a * b}"}
            for a, b in [(3, 4), (5, 6), (7, 8), (12, 3), (9, 9)]
        ]  # fmt: skip
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        return path, f"5 synthetic problems in GSM8K's format (NOT GSM8K: {err})"


def hellaswag_file(workdir: Path) -> tuple[Path, str]:
    try:
        return dataset_path("hellaswag_val", download=False).resolve(), "HellaSwag validation"
    except DatasetError as err:
        path = write_format_examples(workdir / "hellaswag_format.jsonl")
        return path, f"the course's format examples (NOT HellaSwag: {err})"


@torch.no_grad()
def forward_ms(model, length: int, vocab: int, mask_id: int, device: torch.device) -> dict:
    """Median ms of 5 batch-1 forward passes over ``length`` tokens, after a warm-up."""
    g = torch.Generator().manual_seed(length)
    ids = torch.randint(0, vocab, (1, length), generator=g)
    ids = torch.where(ids == mask_id, 0, ids).to(device)
    model(ids)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        model(ids)
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"ms": round(1000 * statistics.median(times), 3), "peak_gib": gib(peak)}


def run_cli(workdir: Path, gsm8k: Path, dry_run: bool, timeout: int, data: dict) -> None:
    out = workdir / "cli_gsm8k.json"
    for old in workdir.glob("cli_gsm8k*"):  # the JSON and its .jsonl: a fresh run
        old.unlink()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
        "-m", "minillada.cli.evaluate", INSTRUCT, "--task", "gsm8k", "--limit", "2",
        "--budget", "64", "--data", str(gsm8k), "--out", str(out),
        *(["--dtype", "float32"] if dry_run else []),
    ]  # fmt: skip
    env = {**os.environ, "TQDM_DISABLE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if dry_run:
        env |= {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    data["command"] = " ".join(command[1:])
    t0 = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    data["cli_seconds"] = round(time.perf_counter() - t0, 2)
    data["returncode"] = done.returncode
    data["output_tail"] = (done.stdout[-1500:] + "\n--- stderr ---\n" + done.stderr[-2500:]).strip()
    if out.is_file():
        result = json.loads(out.read_text())
        keys = ("model", "n", "accuracy", "world_size", "wall_seconds", "summary")
        data["result"] = {k: result.get(k) for k in keys}
    if done.returncode:
        raise RuntimeError(f"the CLI returned {done.returncode}:\n{done.stderr[-2000:]}")


# --------------------------------------------------------------------------------------------------
# 4. projection
# --------------------------------------------------------------------------------------------------


def interpolate(ms: dict[int, float], length: float) -> float:
    """ms per pass at ``length`` tokens: linear between the measured lengths, the shortest one's
    below them (a shorter pass is not counted cheaper than measured), linear beyond the last.
    A longer pass is never counted cheaper than a shorter one measured: each length counts at
    least the most any shorter length measured, since timing noise (another process on the
    machine) can make a longer pass come out faster and the extended slope run downhill."""
    xs = sorted(ms)
    ms = dict(zip(xs, itertools.accumulate((ms[x] for x in xs), max), strict=True))
    if length <= xs[0]:
        return ms[xs[0]]
    if length >= xs[-1]:
        a, b = xs[-2], xs[-1]
        return ms[b] + (ms[b] - ms[a]) / (b - a) * (length - b)
    hi = next(x for x in xs if x >= length)
    lo = xs[xs.index(hi) - 1]
    return ms[lo] + (ms[hi] - ms[lo]) * (length - lo) / (hi - lo)


def answer_ms(ms: dict[int, float], prompt: int, answer: int) -> float:
    return sum(interpolate(ms, L) for L in positions_per_answer(prompt, answer, BLOCK))


def project(ms: dict[int, float], hellaswag_pass_ms: float) -> dict:
    gsm8k = {}
    for answer in (*ANSWER_LENGTHS, GSM8K_BUDGET):
        per = answer_ms(ms, GSM8K_PROMPT, answer)
        gsm8k[str(answer)] = {
            "forward_passes": len(positions_per_answer(GSM8K_PROMPT, answer, BLOCK)),
            "seconds_per_problem": round(per / 1000, 2),
            "minutes_all": round(GSM8K_PROBLEMS * per / 60_000, 1),
        }
    passes = HELLASWAG_ITEMS * HELLASWAG_ENDINGS * HELLASWAG_ENDING
    return {
        "gsm8k_instruct": {
            "assumptions": f"{GSM8K_PROBLEMS} problems, prompt {GSM8K_PROMPT} tokens (0-shot chat "
            f"prompt, ~150-200 real tokens), blocks of {BLOCK}, one token per pass, passes over "
            f"prompt + the blocks so far (positions_per_answer); ms per pass interpolated over "
            f"the measured lengths; key '{GSM8K_BUDGET}': answers that never end",
            "by_answer_tokens": gsm8k,
        },
        "hellaswag_confidence": {
            "assumptions": f"{HELLASWAG_ITEMS:,} items x {HELLASWAG_ENDINGS} endings x "
            f"{HELLASWAG_ENDING} tokens per ending = {passes:,} forward passes (one per ending "
            f"token) over {HELLASWAG_CONTEXT} context + {HELLASWAG_ENDING} ending + 1 EOS tokens",
            "ms_per_pass": hellaswag_pass_ms,
            "minutes_all": round(passes * hellaswag_pass_ms / 60_000, 1),
        },
    }


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def prepare_workdir(workdir: Path) -> None:
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / MARKER).is_file():
        raise SystemExit(
            f"{workdir} exists and was not made by this script: name an empty or new --workdir."
        )
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by bench/gpu_rehearsal.py; deleted at its end\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu_rehearsal.json")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/illada_rehearsal"))
    ap.add_argument("--data-dir", default=None, help=f"sets ${DATA_DIR_ENV} (GSM8K's test split)")
    ap.add_argument("--dry-run", action="store_true", help="small size, CPU, float32")
    ap.add_argument("--keep", action="store_true", help="keep the snapshots in --workdir")
    args = ap.parse_args(argv)

    if args.dry_run:
        device, dtype, size = torch.device("cpu"), torch.float32, SIZES["dry"]
        # one thread: on a few shared cores, torch's spinning threads slow small matrix products
        # down a hundredfold when another process holds a core (the dry run times nothing)
        torch.set_num_threads(1)
    elif torch.cuda.is_available():
        device, dtype, size = torch.device("cuda"), torch.bfloat16, SIZES["full"]
    else:
        raise SystemExit("No GPU here: run with --dry-run for the small CPU rehearsal.")
    if args.data_dir is not None:
        os.environ[DATA_DIR_ENV] = os.pathsep.join(
            str(Path(p).resolve()) for p in args.data_dir.split(os.pathsep)
        )
    workdir = args.workdir.resolve()
    prepare_workdir(workdir)
    run = Run(args.out, device)
    run.set("environment", environment_report())
    run.set("command", "python bench/gpu_rehearsal.py " + " ".join(sys.argv[1:]))
    run.set("mode", "dry run: small model on the CPU, float32" if args.dry_run else "full size")
    run.set("device", str(device))
    run.set("torch_threads", torch.get_num_threads())
    steps = run.results["steps"]

    with run.step("write") as data:
        write_snapshots(workdir, size, device, dtype, data)

    os.environ[WEIGHTS_ENV] = str(workdir)
    os.environ[REHEARSAL_ENV] = "1"
    with run.step("inspect") as data:
        report = inspect_snapshot(released_folder(INSTRUCT), INSTRUCT)
        data.update(report=str(report), ok=report.ok, notes=report.notes,
                    note_shown=bool(report.notes), problems=report.problems)  # fmt: skip
        print("\n".join("  " + line for line in str(report).splitlines()), flush=True)

    instruct = None
    standins = workdir / "standins"
    with run.step("load") as data:
        instruct = open_quietly(INSTRUCT, device, standins, data)

    settings = replace(ILLADA_INSTRUCT, gen_length=size["budget"])
    gsm8k_path, gsm8k_source = gsm8k_file(workdir)
    ms: dict[int, float] = {}
    hellaswag_pass_ms = None
    if instruct is not None:
        tok, model = instruct.tokenizer, instruct.model
        with run.step("fingerprint") as data:
            ids, positions = probe(tok)
            fp = record_top_k(model, instruct.name, ids, positions)
            data.update(probe_tokens=len(ids), positions=positions, dtype=fp.dtype,
                        device=fp.device, top5_ids=fp.ids, top5_logits=fp.logits)  # fmt: skip

        with run.step("answer") as data:
            question = "A baker makes 24 rolls an hour for 5 hours and sells all but 18. How many?"
            prompt = instruct.chat_prompt([{"role": "user", "content": question}])
            answer = generate_answer(model, tok, prompt, settings)
            data.update(settings=settings.describe(), **answer_record(answer, len(prompt)))

        with run.step("chat") as data:
            chat = Chat(model, tok, settings, torch.Generator().manual_seed(0))
            turns = []
            for message in ["What is 17 times 3?", "And half of that?"]:
                t0 = time.perf_counter()
                turn = chat.say(message)
                turns.append({"user": message, "forward_passes": turn.forward_passes,
                              "reply_chars": len(turn.reply), "reply_head": turn.reply[:120],
                              "seconds": round(time.perf_counter() - t0, 3)})  # fmt: skip
            data.update(turns=turns, conversation_tokens=int(chat.ids.shape[1]))
            del chat

        with run.step("gsm8k") as data:
            items = load_gsm8k(gsm8k_path, n=5)
            prompts = [len(gsm8k_prompt(instruct, item.question)) for item in items]
            result = run_gsm8k(instruct, items, settings)
            data.update(
                source=gsm8k_source,
                n=len(items),
                settings=result.settings,
                accuracy=result.score.accuracy,
                prompt_tokens=prompts,
                output_tokens=[i.output_tokens for i in result.items],
                forward_passes=[i.forward_passes for i in result.items],
                item_seconds=[round(i.seconds, 3) for i in result.items],
                generation_seconds=round(result.seconds, 3),
                wall_seconds=round(result.wall_seconds, 3),
                tokens_per_second=round(result.tokens_per_second, 2),
                summary=result.summary(),
            )

        with run.step("forward") as data:
            vocab, mask = tok.vocab_size, tok.mask_id
            per_length = {L: forward_ms(model, L, vocab, mask, device) for L in size["lengths"]}
            ms = {L: v["ms"] for L, v in per_length.items()}
            hs_length = HELLASWAG_CONTEXT + HELLASWAG_ENDING + 1
            hellaswag_pass_ms = forward_ms(model, hs_length, vocab, mask, device)["ms"]
            longest = max(size["lengths"])
            data.update(
                batch=1,
                by_length=per_length,
                hellaswag_length=hs_length,
                hellaswag_pass_ms=hellaswag_pass_ms,
                memory_needed_gib_at_longest=gib(
                    memory_needed(model.config, next(model.parameters()).dtype, longest)
                ),
            )
            if "answer" in steps and "error" not in steps["answer"]:
                a = steps["answer"]
                predicted = answer_ms(ms, a["prompt_tokens"], a["computed_tokens"]) / 1000
                data["answer_predicted_seconds"] = round(predicted, 3)
                data["answer_measured_seconds"] = a["seconds"]

        del model, tok
    del instruct
    free(device)

    base = None
    with run.step("load_base") as data:
        base = open_quietly(BASE, device, standins, data)
    if base is not None:
        for method, kwargs in [("confidence", {}), ("mc", {"mc_num": 8})]:
            with run.step(f"hellaswag_{method}") as data:
                hs_path, hs_source = hellaswag_file(workdir)
                items = load_hellaswag(hs_path, n=5)
                scored = run_hellaswag(base, items, method, **kwargs)
                data.update(source=hs_source, n=scored.n, method=scored.method,
                            acc=scored.correct / scored.n, acc_norm=scored.correct_norm / scored.n,
                            seconds_per_item=round(scored.seconds / scored.n, 3),
                            line=scored.line())  # fmt: skip
    del base
    free(device)

    with run.step("cli") as data:
        run_cli(workdir, gsm8k_path, args.dry_run, size["cli_timeout"], data)

    with run.step("projection") as data:
        if not ms or hellaswag_pass_ms is None:
            raise RuntimeError("no forward timings to project from (the forward step failed)")
        data.update(project(ms, hellaswag_pass_ms))
        for method in ("confidence", "mc"):
            hs = steps.get(f"hellaswag_{method}", {})
            if "seconds_per_item" in hs:
                data[f"hellaswag_{method}_minutes_at_measured_rate"] = round(
                    hs["seconds_per_item"] * HELLASWAG_ITEMS / 60, 1
                )

    if not args.keep:
        shutil.rmtree(workdir)
    run.set("workdir", str(workdir) + (" (kept)" if args.keep else " (deleted)"))
    run.set("total_seconds", round(time.perf_counter() - run.start, 1))
    run.set("failed_steps", run.failed)
    print_summary(run.results)
    return 1 if run.failed else 0


def print_summary(results: dict) -> None:
    steps = results["steps"]
    print(f"\ngpu_rehearsal, {results['mode']} on {results['device']}: "
          f"{results['total_seconds']:.1f} s in all")  # fmt: skip

    def get(name: str, key: str, default="-"):
        return steps.get(name, {}).get(key, default)

    w = steps.get("write", {})
    by_length = get("forward", "by_length", {})
    notes = {
        "write": f"{w.get('parameters', 0):,} parameters, {len(w.get('shards', {}))} shards, "
        f"{w.get('tensors_bytes', 0) / 1e9:.2f} GB (build {w.get('build_seconds')} s, save "
        f"{w.get('save_seconds')} s)",
        "inspect": f"ready {get('inspect', 'ok')}, NOTE shown {get('inspect', 'note_shown')}",
        "load": f"{get('load', 'load_seconds')} s to load, peak {get('load', 'load_peak_gib')} GiB"
        f" ({get('load', 'load_peak_is')}), host peak {get('load', 'host_peak_gib')} GiB",
        "answer": f"{get('answer', 'output_tokens')} tokens (stopped {get('answer', 'stopped')}) "
        f"in {get('answer', 'forward_passes')} passes, {get('answer', 'tokens_per_second')} "
        f"tokens/s, peak {get('answer', 'peak_gib')} GiB",
        "chat": f"passes per turn {[t['forward_passes'] for t in get('chat', 'turns', [])]}",
        "gsm8k": f"{get('gsm8k', 'n')} items, output tokens {get('gsm8k', 'output_tokens')}, "
        f"{get('gsm8k', 'tokens_per_second')} tokens/s",
        "forward": "ms " + ", ".join(f"{L}: {v['ms']}" for L, v in by_length.items()),
        "load_base": f"{get('load_base', 'load_seconds')} s to load",
        "hellaswag_confidence": f"{get('hellaswag_confidence', 'seconds_per_item')} s per item",
        "hellaswag_mc": f"{get('hellaswag_mc', 'seconds_per_item')} s per item",
        "cli": f"return code {get('cli', 'returncode')}",
    }
    for name, data in steps.items():
        status = "FAILED" if "error" in data else ""
        print(f"  {name:<22}{data['seconds']:>8.1f} s  {status}{notes.get(name, '')}")
    projection = steps.get("projection", {})
    if "gsm8k_instruct" in projection:
        rows = projection["gsm8k_instruct"]["by_answer_tokens"]
        print("  projected full GSM8K-Instruct (1,319 problems): " + ", ".join(
            f"{k}-token answers {v['minutes_all']} min" for k, v in rows.items()))  # fmt: skip
        print(f"  projected full HellaSwag, confidence: "
              f"{projection['hellaswag_confidence']['minutes_all']} min")  # fmt: skip
    if results.get("failed_steps"):
        print(f"  FAILED steps: {results['failed_steps']}")


if __name__ == "__main__":
    sys.exit(main())
