"""Evaluate a released model (or its stand-in) on GSM8K or HellaSwag, on one GPU or many.

    python -m minillada.cli.evaluate iLLaDA-8B-Instruct --task gsm8k --limit 100
    python -m minillada.cli.evaluate iLLaDA-8B-Base --task gsm8k --shots 8 --limit 200
    python -m minillada.cli.evaluate iLLaDA-8B-Base --task hellaswag --method confidence
    torchrun --nproc_per_node=8 -m minillada.cli.evaluate iLLaDA-8B-Base --task hellaswag

The weights are read from ``--weights`` or ``$MINILLADA_WEIGHTS_DIR/<name>``
(``python -m minillada.cli.download_weights <name>`` puts them there); ``--stand-in DIR`` writes
and uses the project's stand-in instead (``minillada.checkpoints.standins``), labelled as such.
Without ``--limit`` the whole set is scored (GSM8K: 1,319 problems; HellaSwag: 10,042 items). Under
``torchrun`` every process loads the model on its own GPU, scores its share of the items, and
the results are gathered once; rank 0 prints the result beside the paper's number and, with
``--out``, writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from minillada.checkpoints.released import RELEASED, load_released, released_folder
from minillada.checkpoints.standins import STANDIN_NAMES, write_standin
from minillada.evaluation.benchmarks import run_gsm8k, run_hellaswag
from minillada.evaluation.gsm8k import exemplars_and_items, load_gsm8k
from minillada.evaluation.hellaswag import load_hellaswag
from minillada.evaluation.paper import paper_result
from minillada.sampling.answer import ILLADA_BASE, ILLADA_INSTRUCT, LLADA_INSTRUCT
from minillada.training.distributed import (
    barrier,
    rank_and_world,
    setup_distributed,
    teardown_distributed,
)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("name", choices=sorted(RELEASED))
    ap.add_argument("--task", choices=["gsm8k", "hellaswag"], required=True)
    ap.add_argument("--weights", default=None, help="snapshot folder (default: see above)")
    ap.add_argument("--stand-in", default=None, metavar="DIR", help="write and use a stand-in")
    ap.add_argument(
        "--limit", type=int, default=None, help="score the first n items (default: all)"
    )
    ap.add_argument("--shots", type=int, default=8, help="GSM8K, Base models")
    ap.add_argument("--budget", type=int, default=None, help="tokens (default: the paper's)")
    ap.add_argument("--method", choices=["confidence", "mc"], default="confidence")
    ap.add_argument("--mc-num", type=int, default=128)
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--data", default=None, help="the benchmark file (default: the download)")
    ap.add_argument("--out", default=None, help="write the result here as JSON (rank 0)")
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    device = setup_distributed()
    rank, world = rank_and_world()
    if args.stand_in is not None:
        if args.name not in STANDIN_NAMES:
            raise SystemExit(
                f"No stand-in for {args.name}; there are stand-ins for {STANDIN_NAMES}."
            )
        folder = Path(args.stand_in)
        if rank == 0:
            write_standin(args.name, folder)
        barrier()  # the others read it once it is written
    else:
        folder = released_folder(args.name, args.weights)
    loaded = load_released(folder, args.name, device, getattr(torch, args.dtype))
    if args.task == "gsm8k":
        items = load_gsm8k(args.data)
        shots = []
        if not loaded.instruct:
            shots, items = exemplars_and_items(items, args.shots)
        items = items[: args.limit]
        family = loaded.report.dialect
        settings = (
            LLADA_INSTRUCT
            if family == "llada"
            else (ILLADA_INSTRUCT if loaded.instruct else ILLADA_BASE)
        )
        if args.budget is not None:
            settings = replace(settings, gen_length=args.budget)
            if not settings.variable_length:
                settings = replace(settings, steps=args.budget)
        run = run_gsm8k(loaded, items, settings, shots=shots, progress=True)
        result = {
            "accuracy": run.score.accuracy,
            "interval": run.score.interval,
            "n": run.score.n,
            "correct": run.score.correct,
            "texts": [i.text for i in run.items],
            "summary": run.summary(),
        }
        paper = paper_result(args.name, "gsm8k")
    else:
        items = load_hellaswag(args.data, args.limit)
        run = run_hellaswag(loaded, items, args.method, mc_num=args.mc_num, progress=True)
        result = {
            "acc": run.correct / run.n,
            "acc_norm": run.correct_norm / run.n,
            "n": run.n,
            "choices": [(i.raw_choice, i.normalised_choice) for i in run.items],
            "summary": f"{loaded.name}: HellaSwag {run.line()}",
        }
        paper = paper_result(args.name, f"hellaswag_{args.method}")
    result |= {"model": loaded.name, "world_size": world, "wall_seconds": run.wall_seconds}
    if rank == 0:
        print(result["summary"])
        print(f"  paper: {paper.line() if paper else 'no published number for this setting'}")
        print(f"  {world} process(es), {run.wall_seconds:.1f} s wall")
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    teardown_distributed()
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
