"""Evaluate a released model (or its stand-in) on GSM8K or HellaSwag, on one GPU or many.

    python -m minillada.cli.evaluate iLLaDA-8B-Instruct --task gsm8k --limit 100 --out r.json
    python -m minillada.cli.evaluate iLLaDA-8B-Instruct --task gsm8k --threshold 0.9 --cache dual
    python -m minillada.cli.evaluate iLLaDA-8B-Instruct --task gsm8k --batch-size 32 --cache dual
    python -m minillada.cli.evaluate iLLaDA-8B-Base --task gsm8k --shots 8 --limit 200
    python -m minillada.cli.evaluate iLLaDA-8B-Base --task hellaswag --method confidence
    torchrun --nproc_per_node=8 -m minillada.cli.evaluate iLLaDA-8B-Base --task hellaswag \\
        --out h.json
    python -m minillada.cli.evaluate iLLaDA-8B-Base --task hellaswag --out h.json --merge

The weights are read from ``--weights`` or ``$MINILLADA_WEIGHTS_DIR/<name>``
(``python -m minillada.cli.download_weights <name>`` puts them there); ``--stand-in DIR`` writes
and uses the project's stand-in instead (``minillada.checkpoints.standins``), labelled as such.
Without ``--limit`` the whole set is scored (GSM8K: 1,319 problems; HellaSwag: 10,042 items).
``--threshold`` and ``--cache`` switch GSM8K's sampler to lesson 8's approximate one; the result
says which sampler ran ("exact" or "approximate") and every setting. ``--batch-size N`` answers N
GSM8K prompts per forward pass (rows that finish leave, waiting prompts take their place; at
temperature 0 each answer is its batch-1 answer, exactly in float32 up to rounding); for HellaSwag
with ``--method mc`` it is the Monte Carlo samples per pass (default 32). HellaSwag's confidence
score always scores an item's four endings in one batch.

With ``--out X.json`` every finished item is appended to ``X.jsonl`` as it is done
(``minillada.evaluation.results_file``), so a run that is killed keeps its work: the same command
again skips the items already there, and refuses the file if anything else changed (model,
settings, items: then choose another ``--out`` or delete the file). Under ``torchrun`` every process
loads the model on its own GPU, scores its share of the items and writes it to its own file
(``X.rank<r>-of-<w>.jsonl``; restart with the same number of processes to resume); no process
waits on another during the run, and at the end rank 0 merges the files into ``X.jsonl``
(waiting up to ``--wait-hours`` for the slowest rank). ``--merge`` does that merge alone, without
loading the model. Rank 0 prints the result, computed from the results file, beside the paper's
number and writes it to ``X.json``. Without ``--out`` nothing is kept and, under ``torchrun``, the
results are gathered once at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from minillada.checkpoints.released import (
    RELEASED,
    LoadedModel,
    load_released,
    released,
    released_folder,
)
from minillada.checkpoints.standins import STANDIN_NAMES, write_standin
from minillada.evaluation.benchmarks import (
    ChoiceItem,
    ChoiceRun,
    GeneratedItem,
    GenerationRun,
    check_items,
    gsm8k_run_from_results,
    hellaswag_run_from_results,
    run_gsm8k,
    run_hellaswag,
)
from minillada.evaluation.gsm8k import exemplars_and_items, load_gsm8k
from minillada.evaluation.hellaswag import load_hellaswag
from minillada.evaluation.paper import paper_result
from minillada.evaluation.parallel import merge_result_files, rank_files
from minillada.evaluation.results_file import ResultsFileError, rank_path, read_results
from minillada.sampling.answer import (
    ILLADA_BASE,
    ILLADA_INSTRUCT,
    LLADA_INSTRUCT,
    GenerationSettings,
)
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
    ap.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="GSM8K: reveal every token at least this confident (approximate; lesson 8)",
    )
    ap.add_argument(
        "--cache",
        choices=["prefix", "dual"],
        default=None,
        help="GSM8K: Fast-dLLM's key/value cache (approximate; lesson 8)",
    )
    ap.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="GSM8K: prompts per forward pass (default 1); HellaSwag mc: samples per pass (32)",
    )
    ap.add_argument("--method", choices=["confidence", "mc"], default="confidence")
    ap.add_argument("--mc-num", type=int, default=128)
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--data", default=None, help="the benchmark file (default: the download)")
    ap.add_argument(
        "--out",
        default=None,
        help="write the result here as JSON (rank 0), and every item to the .jsonl beside it",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="merge the per-rank results files of --out, without loading the model",
    )
    ap.add_argument(
        "--wait-hours",
        type=float,
        default=6.0,
        help="under torchrun, how long rank 0 waits at the end for the other ranks' files",
    )
    return ap


def results_path(out: str | None) -> Path | None:
    """Where the items of a run with ``--out X.json`` go: ``X.jsonl``."""
    if out is None:
        return None
    path = Path(out)
    if path.suffix == ".jsonl":
        raise SystemExit(
            f"--out {out}: expected the summary's path (e.g. {path.with_suffix('.json')}); the "
            "items are written beside it, to the .jsonl of the same name."
        )
    return path.with_suffix(".jsonl")


def gsm8k_settings(args: argparse.Namespace) -> GenerationSettings:
    """The paper's settings for this model, with --budget, --threshold and --cache applied;
    checked before anything is loaded."""
    model = released(args.name)
    if model.dialect == "llada":
        settings = LLADA_INSTRUCT
    else:
        settings = ILLADA_INSTRUCT if model.instruct else ILLADA_BASE
    if args.budget is not None:
        settings = replace(settings, gen_length=args.budget)
        if not settings.variable_length:
            settings = replace(settings, steps=args.budget)
    if args.threshold is not None:
        settings = replace(settings, threshold=args.threshold)
    if args.cache is not None:
        settings = replace(settings, cache=args.cache)
    try:
        settings.check()
    except ValueError as err:
        raise SystemExit(str(err)) from err
    return settings


def gsm8k_items(args: argparse.Namespace) -> tuple[list, list]:
    """(shots, items to score): a Base model's exemplars are the first test items."""
    items, shots = load_gsm8k(args.data), []
    if not released(args.name).instruct:
        shots, items = exemplars_and_items(items, args.shots)
    return shots, items[: args.limit]


def gsm8k_result(run: GenerationRun) -> dict:
    return {
        "accuracy": run.score.accuracy,
        "interval": run.score.interval,
        "n": run.score.n,
        "correct": run.score.correct,
        "texts": [i.text for i in run.items],
        "summary": run.summary(),
        "settings": run.fingerprint["settings"],  # every field, "exact" or "approximate"
    }


def hellaswag_result(run: ChoiceRun) -> dict:
    return {
        "acc": run.correct / run.n,
        "acc_norm": run.correct_norm / run.n,
        "n": run.n,
        "choices": [(i.raw_choice, i.normalised_choice) for i in run.items],
        "summary": f"{run.model}: HellaSwag {run.line()}",
        "settings": run.fingerprint["task"],
    }


def merge(args: argparse.Namespace) -> tuple[dict, int]:
    """--merge: the result of the per-rank files beside --out, and their number of processes."""
    path = results_path(args.out)
    if path is None:
        raise SystemExit("--merge reads the per-rank files of a run: pass that run's --out.")
    found = rank_files(path)
    if len(found) != 1:
        stem = path.with_name(f"{path.stem}.rank*-of-*.jsonl")
        if found:
            advice = f"files of runs on {sorted(found)} processes; move away the ones not wanted"
        elif path.is_file():
            advice = (
                f"only {path.name}, a single process's file, which needs no merge (the same "
                "command without --merge reports it, running only the items it lacks)"
            )
        else:
            advice = "nothing: check --out"
        raise SystemExit(f"--merge expected the files of one run at {stem}, found {advice}.")
    (world,) = found
    fingerprint, _ = read_results(rank_path(path, 0, world))
    if fingerprint is None:
        raise SystemExit(f"{rank_path(path, 0, world)} has no header yet: is that run starting?")
    if args.task == "gsm8k":
        items = gsm8k_items(args)[1]
    else:
        items = load_hellaswag(args.data, args.limit)
    try:
        check_items(fingerprint, items)
        merged = merge_result_files(path, len(items), world)
    except (ResultsFileError, TimeoutError) as err:
        raise SystemExit(str(err)) from err
    if args.task == "gsm8k":
        generated = [GeneratedItem.from_dict(r) for r in merged]
        result = gsm8k_result(gsm8k_run_from_results(fingerprint, items, generated, 0.0, path))
    else:
        scored = [ChoiceItem.from_dict(r) for r in merged]
        result = hellaswag_result(hellaswag_run_from_results(fingerprint, items, scored, 0.0, path))
    return result | {"fingerprint": fingerprint, "results": str(path)}, world


def evaluate(args: argparse.Namespace) -> tuple[dict, float]:
    """Load the model and run the task (every process): the result and the wall seconds."""
    results = results_path(args.out)
    settings = gsm8k_settings(args) if args.task == "gsm8k" else None  # refused before loading
    if args.batch_size is not None and args.batch_size < 1:
        raise SystemExit(f"--batch-size {args.batch_size}: expected at least 1 (rows per pass).")
    if args.task == "hellaswag" and (args.threshold is not None or args.cache is not None):
        raise SystemExit(
            "--threshold and --cache change GSM8K's sampler; HellaSwag scores the endings without "
            "sampling. Leave them out with --task hellaswag."
        )
    device = setup_distributed()
    rank, _ = rank_and_world()
    if args.stand_in is not None:
        if args.name not in STANDIN_NAMES:
            raise SystemExit(
                f"No stand-in for {args.name}; there are stand-ins for {STANDIN_NAMES}."
            )
        folder = Path(args.stand_in)
        if rank == 0:
            write_standin(args.name, folder)
        barrier()  # the others read it once it is written (before the run: no wait during it)
    else:
        folder = released_folder(args.name, args.weights)
    loaded = load_released(folder, args.name, device, getattr(torch, args.dtype))
    try:
        return _run(args, loaded, settings, results)
    except ResultsFileError as err:  # another run's file: say what differs, no traceback
        raise SystemExit(str(err)) from err


def _run(
    args: argparse.Namespace,
    loaded: LoadedModel,
    settings: GenerationSettings | None,
    results: Path | None,
) -> tuple[dict, float]:
    """Run the task on the loaded model (every process): the result and the wall seconds."""
    wait = args.wait_hours * 3600
    if args.task == "gsm8k":
        shots, items = gsm8k_items(args)
        run = run_gsm8k(
            loaded, items, settings, shots=shots, progress=True, results=results,
            wait_seconds=wait, batch_size=args.batch_size or 1,
        )  # fmt: skip
        result = gsm8k_result(run)
    else:
        items = load_hellaswag(args.data, args.limit)
        run = run_hellaswag(
            loaded,
            items,
            args.method,
            mc_num=args.mc_num,
            batch_size=args.batch_size or 32,
            progress=True,
            results=results,
            wait_seconds=wait,
        )
        result = hellaswag_result(run)
    result |= {"fingerprint": run.fingerprint, "results": str(results) if results else None}
    return result, run.wall_seconds


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.merge:
        result, world = merge(args)
        rank, wall = 0, 0.0
        done = f"  merged the files of {world} process(es) into {results_path(args.out)}"
    else:
        result, wall = evaluate(args)
        rank, world = rank_and_world()
        done = f"  {world} process(es), {wall:.1f} s wall"
    task = "gsm8k" if args.task == "gsm8k" else f"hellaswag_{args.method}"
    paper = paper_result(args.name, task)
    result |= {"model": result["fingerprint"]["model"]["name"], "world_size": world}
    result |= {"wall_seconds": wall}
    if rank == 0:
        print(result["summary"])
        print(f"  paper: {paper.line() if paper else 'no published number for this setting'}")
        print(done)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    teardown_distributed()
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
