"""Lesson 6's two SFT recipes side by side, from the training.json of each finished
minillada.cli.train_sft run (same base model, data, steps and token positions per step).

    python bench/sft_recipes.py runs/sft_llada runs/sft_variable --out bench/sft_recipes.json

Writes the two records (settings, loss curve, held-out curve, final scores with both samplers) into
one file, with the scores of the base model before fine-tuning on the same held-out items and
samplers (``--base-eval``); lesson 6 reads it for its comparison. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from minillada.checkpoints.shipped import load_subword_shakespeare
from minillada.data.downloads import load_text
from minillada.data.instructions import TASKS, make_instruction_data
from minillada.evaluation.instructions import SAMPLERS, evaluate_instructions
from minillada.runtime import environment_report


def base_scores(gen_length: int, block_length: int) -> dict:
    """The base model (before fine-tuning) on lesson 6's held-out items, both samplers."""
    model, tok, _ = load_subword_shakespeare()
    items = make_instruction_data(load_text()).held_out
    out = {}
    for sampler in SAMPLERS:
        scores = evaluate_instructions(model, tok, items, sampler, gen_length, block_length)
        out[sampler] = {task: s.record() for task, s in scores.items()}
        print(f"base, {sampler}: {scores['all']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", default=None)
    ap.add_argument("--base-eval", action="store_true", help="also score the base model")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    records = {}
    for run in args.runs:
        record = json.loads((run / "training.json").read_text())
        records[record["recipe"]] = record
    first = next(iter(records.values()))["evaluation"]
    base = base_scores(first["gen_length"], first["block_length"]) if args.base_eval else None
    columns = {name: r["evaluation"] for name, r in records.items()}
    if base is not None:
        columns = {"base": base, **columns}
    print("| task | " + " | ".join(f"{r}, {s}" for r in columns for s in SAMPLERS) + " |")
    print("|---" * (1 + 2 * len(columns)) + "|")
    for task in [*TASKS, "all"]:
        cells = []
        for evaluation in columns.values():
            for sampler in SAMPLERS:
                s = evaluation[sampler][task]
                lo, hi = s["interval95"]
                cells.append(f"{s['accuracy']:.1%} [{lo:.1%}, {hi:.1%}]")
        print(f"| {task} | " + " | ".join(cells) + " |")
    if args.out:
        out = {"machine": environment_report(), "base": base, "runs": records}
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
