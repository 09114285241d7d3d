"""The headroom a policy gradient can use, by rollout temperature (issue 25).

    ATEN_CPU_CAPABILITY=avx2 python bench/rl_headroom.py --out bench/rl_headroom.json
    python bench/rl_headroom.py --sampler variable --items development --n 400 \
        --out bench/rl_headroom_variable_development.json       # the rollouts of test F's runs
    python bench/rl_headroom.py --quick --out /tmp/headroom.json      # every part, tiny (the test)

RL makes a model prefer answers it already samples sometimes. On lesson 6's held-out items of the
tasks the RL runs train on (``--tasks``), or on development items (``--items development``: new
items from the same part of the text, ``make_development_items``, for choosing a setting without
looking at the held-out items), this samples k answers per item at each temperature with the
rollouts' sampler (``--sampler``: the fixed canvas or the variable-length sampler, 32 tokens in
blocks of 8, one token per step) and counts the items
with at least one exact answer (pass@k), against the greedy answer (temperature 0) on the same
items: pass@k minus greedy is the most that sharpening the sampled answers can add to greedy
accuracy.
Also the mean accuracy of one answer at each temperature. Writes ``--out`` and the .md beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from minillada.checkpoints.hf import load_hf_checkpoint
from minillada.checkpoints.shipped import INSTRUCT_SHAKESPEARE, shipped_checkpoint
from minillada.data.downloads import load_text
from minillada.data.instructions import TASKS, make_development_items, make_instruction_data
from minillada.data.tokenizer import LLaDATokenizer
from minillada.estimate import wilson_interval
from minillada.evaluation.instructions import SAMPLERS, sampled_grades
from minillada.runtime import environment_report, processor_name

GEN, BLOCK = 32, 8


def markdown(record: dict) -> str:
    """bench/rl_headroom.md: every number from the record."""
    n, k, tasks = record["n"], record["k"], record["tasks"]
    items = {"held_out": "held-out", "development": "development (not held-out)"}
    sampler = {"fixed": "fixed canvas", "variable": "variable-length sampler"}
    lines = [
        "# Headroom for RL by rollout temperature (issue 25)",
        "",
        f"`{record['command']}`: lesson 6's model on {n} {items[record.get('items', 'held_out')]} "
        f"`{'`, `'.join(tasks)}` items, on {record['machine']}, "
        f"torch {record['environment'].get('torch', '?')}; "
        f"{sampler[record.get('sampler', 'fixed')]}, {GEN} tokens in blocks of "
        f"{BLOCK}, one token per step. Greedy (temperature 0): {record['greedy']}/{n} exact.",
        "",
        f"| temperature | pass@{k} [95% interval] | right in some sample, not greedy "
        "| right greedy, in no sample | one answer |",
        "|---|---|---|---|---|",
    ]
    for t, r in record["temperatures"].items():
        lo, hi = r["interval95"]
        lines.append(
            f"| {t} | {r['pass_at_k']}/{n} = {r['pass_at_k'] / n:.1%} [{lo:.1%}, {hi:.1%}] "
            f"| {r['pass_not_greedy']} | {r['greedy_not_pass']} | {r['one_answer']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tasks", default="reverse,repeat")
    ap.add_argument("--temperatures", default="0.3,0.6,1.0")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--sampler", choices=SAMPLERS, default="fixed")
    ap.add_argument("--items", choices=("held_out", "development"), default="held_out")
    ap.add_argument("--n", type=int, default=400, help="with --items development: how many")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 items, k = 2: tests the script")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tasks = args.tasks.split(",")
    temperatures = [float(t) for t in args.temperatures.split(",")]
    if any(t <= 0 for t in temperatures):
        raise SystemExit(
            f"--temperatures must all be > 0 (greedy is always scored), got {temperatures}"
        )
    if unknown := [t for t in tasks if t not in TASKS]:
        raise SystemExit(f"--tasks {args.tasks}: unknown {unknown}; the tasks are {TASKS}")
    k = 2 if args.quick else args.k
    if args.items == "development":  # the items before the model: a bad --n fails at once
        items = make_development_items(load_text(), 2 if args.quick else args.n, tasks)
    else:
        held_out = make_instruction_data(load_text(), 10_000, 100, 0).held_out  # lesson 6's split
        items = [e for e in held_out if e.task in tasks][: 2 if args.quick else None]
    base = shipped_checkpoint(INSTRUCT_SHAKESPEARE)
    model = load_hf_checkpoint(base, dtype=torch.float32).eval()
    tok = LLaDATokenizer.from_folder(base)
    greedy = [g[0] for g in sampled_grades(model, tok, items, 1, 0.0, GEN, BLOCK, seed=0,
                                           sampler=args.sampler)]  # fmt: skip
    record = {"command": "python bench/rl_headroom.py " + " ".join(sys.argv[1:]),
              "machine": processor_name(), "environment": environment_report(), "tasks": tasks,
              "items": args.items, "sampler": args.sampler,
              "n": len(items), "k": k, "greedy": sum(map(bool, greedy)),
              "temperatures": {}}  # fmt: skip
    for t in temperatures:
        t0 = time.perf_counter()
        grades = sampled_grades(model, tok, items, k, t, GEN, BLOCK, seed=0, sampler=args.sampler)
        passed = [any(g) for g in grades]
        record["temperatures"][str(t)] = {
            "pass_at_k": sum(passed),
            "interval95": list(wilson_interval(sum(passed), len(items))),
            "one_answer": sum(map(sum, grades)) / (k * len(items)),
            "pass_not_greedy": sum(bool(p and not g) for p, g in zip(passed, greedy, strict=True)),
            "greedy_not_pass": sum(bool(g and not p) for p, g in zip(passed, greedy, strict=True)),
            "seconds": time.perf_counter() - t0,
        }
        print(t, json.dumps(record["temperatures"][str(t)]), flush=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(record))


if __name__ == "__main__":
    main()
