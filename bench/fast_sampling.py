"""Lesson 8's trade-off on lesson 6's shipped instruct model (CPU): forward passes, wall time and
held-out exact match of the exact samplers against threshold decoding and the approximate caches.

    ATEN_CPU_CAPABILITY=avx2 python bench/fast_sampling.py --out bench/fast_sampling.json

All 490 held-out instructions of lesson 6 (make_instruction_data(text, 10_000, 100, seed=0)),
budget 32, blocks of 8, temperature 0. The exact samplers reveal one token per forward pass: the
fixed canvas (LLaDA's generate, 32 steps) and variable-length generation (iLLaDA's var_generate, 8
steps per block). Each fast setting is a threshold (every token whose confidence reaches it, at
least one per step), a cache (None, "prefix" or "dual", refreshed at each block), or both. Wall
time is the sum over items of the generation alone, one process, the torch threads left at their
default; accuracy with its 95% Wilson interval.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from minillada.checkpoints.shipped import load_instruct_shakespeare
from minillada.data.downloads import load_text
from minillada.data.instructions import make_instruction_data
from minillada.evaluation.instructions import evaluate_instructions
from minillada.runtime import environment_report, processor_name

SETTINGS = {
    "fixed": [(None, None), (None, "prefix"), (None, "dual"), (0.9, None), (0.9, "prefix"),
              (0.9, "dual"), (0.7, "dual"), (0.5, "dual")],
    "variable": [(None, None), (None, "dual"), (0.9, None), (0.9, "dual"), (0.7, "dual"),
                 (0.5, "dual")],
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=None, help="the first n held-out items only")
    args = ap.parse_args()
    model, tokenizer, _ = load_instruct_shakespeare()
    items = make_instruction_data(load_text(), 10_000, 100, seed=0).held_out[: args.limit]
    results = {
        "machine": {**environment_report(), "processor": processor_name()},
        "threads": torch.get_num_threads(),
        "items": len(items),
        "budget": 32,
        "block_length": 8,
        "runs": [],
    }
    t0 = time.perf_counter()
    for sampler, settings in SETTINGS.items():
        for threshold, cache in settings:
            score = evaluate_instructions(
                model, tokenizer, items, sampler, 32, 8, False, threshold, cache
            )["all"]
            run = {
                "sampler": sampler,
                "threshold": threshold,
                "cache": cache,
                "correct": score.correct,
                "n": score.n,
                "accuracy": score.accuracy,
                "interval": score.interval,
                "mean_forward_passes": score.mean_forward_passes,
                "seconds": score.seconds,
            }
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
    results["total_seconds"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
