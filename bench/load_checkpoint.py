"""Benchmark: loading a sharded Hugging Face snapshot with minillada.checkpoints.hf.

Writes a random checkpoint of the ``llada_1b`` preset (~1.03B parameters, bf16, 6 shards, released
file naming) with ``save_hf_checkpoint`` into bench/_scratch/ (ignored by git), then times, each in
a fresh Python process with a warm page cache:

* ``load_file (lazy)``: ``safetensors.torch.load_file`` of every shard. On the CPU this returns
  views of the memory-mapped files, so almost nothing is read yet (shown for reference);
* ``load_file + copy``: the same, then each tensor copied into memory of its own, shard by shard:
  the same bytes moved as a real load (the baseline the target refers to);
* ``load_hf_checkpoint``: minillada's loader (header checks, meta build, shard-by-shard streaming).

and records the wall time and the peak resident memory (VmHWM) above the process's memory just
before loading. On the CPU the loaded weights themselves are resident, so the interesting figure is
the peak *beyond* the model's own bytes; targets: that overhead <= 1.5 x the largest shard, and
load time within 1.5 x of ``load_file + copy``.

Usage: python bench/load_checkpoint.py [--preset llada_1b | illada_1b] [--shards 6] [--repeats 3]
[--store-tied-head] [--keep]
Results are recorded in bench/load_checkpoint.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SCRATCH = REPO / "bench" / "_scratch"
METHODS = ["load_file (lazy)", "load_file + copy", "load_hf_checkpoint"]


def _mem_mib() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


def worker(method: str, folder: Path) -> None:
    """Run one load in this (fresh) process and print a JSON line with time and memory."""
    from safetensors.torch import load_file

    from minillada.checkpoints.hf import load_hf_checkpoint

    shards = sorted(folder.glob("model-*.safetensors"))
    before = _mem_mib()
    t0 = time.perf_counter()
    if method == "load_file (lazy)":
        kept = [load_file(s) for s in shards]
    elif method == "load_file + copy":
        kept = []
        for s in shards:
            kept.append({k: v.clone() for k, v in load_file(s).items()})
    else:
        kept = load_hf_checkpoint(folder)
    seconds = time.perf_counter() - t0
    after = _mem_mib()
    print(json.dumps({"seconds": seconds, "before": before, "after": after}))
    del kept


def write_checkpoint(preset_name: str, shards: int, folder: Path, store_tied_head: bool) -> None:
    from minillada.checkpoints.hf import save_hf_checkpoint
    from minillada.models.llada import LLaDAModel, preset

    model = LLaDAModel(preset(preset_name), device="meta", dtype=torch.bfloat16)
    model.to_empty(device="cpu")
    model.init_weights(torch.Generator().manual_seed(0))
    save_hf_checkpoint(model, folder, num_shards=shards, store_tied_head=store_tied_head)


def warm(folder: Path) -> None:
    for p in sorted(folder.glob("model-*.safetensors")):
        with open(p, "rb") as f:
            while f.read(64 << 20):
                pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="llada_1b")
    ap.add_argument("--shards", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint in bench/_scratch")
    ap.add_argument(
        "--store-tied-head",
        action="store_true",
        help="a tied model (iLLaDA) also stores lm_head.weight, which the loader checks",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, Path(args.folder))
        return

    from minillada.models.llada import preset
    from minillada.models.sizing import count_parameters
    from minillada.runtime import environment_report

    head = "-stored-head" if args.store_tied_head else ""
    folder = SCRATCH / f"{args.preset}-{args.shards}shards{head}"
    if not (folder / "model.safetensors.index.json").is_file():
        t0 = time.perf_counter()
        write_checkpoint(args.preset, args.shards, folder, args.store_tied_head)
        print(f"wrote {folder.relative_to(REPO)} in {time.perf_counter() - t0:.1f}s")
    shard_sizes = [p.stat().st_size / 2**20 for p in sorted(folder.glob("model-*.safetensors"))]
    n_params = count_parameters(preset(args.preset)).total
    model_mib = 2 * n_params / 2**20  # bf16

    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    for _ in range(args.repeats):
        for method in METHODS:  # interleaved, so background load hits all alike
            warm(folder)
            cmd = [sys.executable, __file__, "--worker", method, "--folder", str(folder)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
            results[method].append(json.loads(out.stdout.strip().splitlines()[-1]))

    largest = max(shard_sizes)
    print(
        f"\npreset {args.preset}: {n_params:,} parameters, bf16 {model_mib:,.0f} MiB in "
        f"{len(shard_sizes)} shards of {', '.join(f'{s:,.0f}' for s in shard_sizes)} MiB "
        f"(largest {largest:,.0f} MiB); {args.repeats} runs each, median\n"
    )
    print(
        "| method | time (s) | peak RSS above start (MiB) | peak beyond model bytes (MiB) "
        "| / largest shard |"
    )
    print("|---|---|---|---|---|")
    base_time = None
    for method in METHODS:
        runs = results[method]
        t = statistics.median(r["seconds"] for r in runs)
        peak = statistics.median(r["after"]["VmHWM"] - r["before"]["VmRSS"] for r in runs)
        beyond = peak - model_mib if method != "load_file (lazy)" else float("nan")
        if method == "load_file + copy":
            base_time = t
        print(f"| {method} | {t:.2f} | {peak:,.0f} | {beyond:,.0f} | {beyond / largest:.2f} |")
    ours = statistics.median(r["seconds"] for r in results["load_hf_checkpoint"])
    print(f"\nload_hf_checkpoint / (load_file + copy) time: {ours / base_time:.2f}x")
    print("\nenvironment:", json.dumps(environment_report(), indent=1))
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
