"""Variable-length generation against LLaDA's fixed canvas on lesson 6's shipped instruct model:
forward passes per answer, wall time and held-out accuracy (issue 13's target: at least 2x fewer
passes at an accuracy within the fixed canvas's 95% interval).

    python bench/var_length_passes.py --threads 2 --out bench/var_length_passes.json

Both samplers answer every held-out item of lesson 6 (make_instruction_data, seed 0) at
temperature 0 with the same budget (32 tokens) and one token revealed per forward pass: the fixed
canvas is ``generate`` with gen_length 32, steps 32, blocks of 8; variable length is
``var_generate`` with blocks of 8 and 8 steps per block. Also swept: the block length of variable
length generation (4, 8, 16, 32).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from minillada.checkpoints.shipped import load_instruct_shakespeare
from minillada.data.downloads import load_text
from minillada.data.instructions import TASKS, make_instruction_data
from minillada.evaluation.instructions import evaluate_instructions
from minillada.runtime import environment_report


def summary(scores, seconds: float) -> dict:
    return {task: s.record() for task, s in scores.items()} | {"seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--budget", type=int, default=32)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok, record = load_instruct_shakespeare()
    items = make_instruction_data(load_text()).held_out
    runs = {}
    for name, sampler, block in [("fixed, block 8", "fixed", 8)] + [
        (f"variable, block {b}", "variable", b) for b in (4, 8, 16, 32)
    ]:
        t0 = time.perf_counter()
        scores = evaluate_instructions(
            model, tok, items, sampler, args.budget, block, progress=False
        )
        runs[name] = summary(scores, time.perf_counter() - t0)
        s = scores["all"]
        print(f"{name:18s} {s}  {runs[name]['seconds']:.1f} s", flush=True)
    fixed, var = runs["fixed, block 8"], runs["variable, block 8"]
    lo, hi = fixed["all"]["interval95"]
    result = {
        "machine": environment_report(),
        "threads": torch.get_num_threads(),
        "model": f"data/checkpoints/instruct_shakespeare ({record['recipe']} recipe)",
        "items": len(items),
        "tasks": list(TASKS),
        "budget": args.budget,
        "runs": runs,
        "passes_ratio": fixed["all"]["mean_forward_passes"] / var["all"]["mean_forward_passes"],
        "time_ratio": fixed["seconds"] / var["seconds"],
        "variable_accuracy_inside_fixed_interval": lo <= var["all"]["accuracy"] <= hi,
    }
    print(
        f"fixed / variable (block 8): {result['passes_ratio']:.2f}x the forward passes, "
        f"{result['time_ratio']:.2f}x the time; variable's accuracy inside fixed's interval: "
        f"{result['variable_accuracy_inside_fixed_interval']}"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
