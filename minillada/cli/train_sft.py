"""Fine-tune lesson 4's base model on lesson 6's instructions with one of the two SFT recipes.

    python -m minillada.cli.train_sft --recipe llada --out runs/sft_llada
    python -m minillada.cli.train_sft --recipe variable --out runs/sft_variable

``--recipe llada``: LLaDA's (prompt never masked, EOS padding to the batch's longest row, each row
divided by its answer length). ``--recipe variable``: iLLaDA's (prompt + answer + one EOS, packed
into windows, masked as in pre-training). Both run the course's one training loop with the same
learning-rate schedule and the same compute: by default (``--windows 0``) the variable recipe gets
as many whole windows per step as fit the token positions of LLaDA's padded batch of
``--batch-size`` rows, measured on the data; the run prints both. At the end the
held-out instructions are answered with the fixed canvas and with variable-length generation, and
the folder gets the weights (LLaDA layout), the tokenizer files and training.json (the command,
the settings, the loss curve and every score). data/checkpoints/instruct_shakespeare was made with
the command recorded in data/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from minillada.checkpoints.hf import load_hf_checkpoint, save_hf_checkpoint
from minillada.checkpoints.shipped import METRICS_FILE, SUBWORD_SHAKESPEARE, shipped_checkpoint
from minillada.data.bpe import save_tokenizer
from minillada.data.downloads import load_text
from minillada.data.instructions import encode_examples, make_instruction_data
from minillada.data.tokenizer import LLaDATokenizer
from minillada.evaluation.instructions import SAMPLERS, evaluate_instructions
from minillada.training.loop import TrainConfig, train
from minillada.training.sft import (
    llada_sft_batches,
    llada_sft_loss_fn,
    pack_examples,
    packed_batches,
    variable_length_sft_loss_fn,
)

RECIPES = ("llada", "variable")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--recipe", choices=RECIPES, required=True)
    ap.add_argument("--out", required=True, help="folder for the fine-tuned model")
    ap.add_argument("--base", default=None, help="base model folder (default: the shipped one)")
    ap.add_argument("--iters", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=32, help="llada: examples per step")
    ap.add_argument(
        "--windows",
        type=int,
        default=0,
        help="variable: packed windows per step (0: as many token positions as llada's batch)",
    )
    ap.add_argument("--window", type=int, default=128, help="variable: tokens per window")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--train-per-task", type=int, default=10000)
    ap.add_argument("--held-out-per-task", type=int, default=100)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--eval-interval", type=int, default=1000, help="0 = only at the end")
    ap.add_argument("--eval-per-task", type=int, default=10, help="held-out items per task then")
    ap.add_argument("--gen-length", type=int, default=32, help="answer budget when evaluating")
    ap.add_argument("--block-length", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--ship", default=None, help="also copy the finished folder here")
    ap.add_argument(
        "--no-final-eval", action="store_true", help="skip the held-out scores at the end"
    )
    return ap


def _scores_record(scores) -> dict:
    return {task: s.record(lengths=task == "all") for task, s in scores.items()}


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = Path(args.base) if args.base else shipped_checkpoint(SUBWORD_SHAKESPEARE)
    model = load_hf_checkpoint(base, dtype=torch.float32)
    tok = LLaDATokenizer.from_folder(base)
    data = make_instruction_data(
        load_text(), args.train_per_task, args.held_out_per_task, args.data_seed
    )
    prompts, answers = encode_examples(tok, data.train)
    probe = torch.Generator().manual_seed(0)
    padded = llada_sft_batches(prompts, answers, tok.eos_id, args.batch_size)
    llada_positions = sum(padded(probe)[0].numel() for _ in range(200)) / 200
    if args.recipe == "llada":
        get_batch, positions = padded, llada_positions
        loss_fn = llada_sft_loss_fn(tok.mask_id)
        batch_size = args.batch_size
    else:
        windows = pack_examples(prompts, answers, tok.eos_id, args.window)
        batch_size = args.windows or max(1, round(llada_positions / args.window))
        get_batch, positions = packed_batches(windows, batch_size), batch_size * args.window
        loss_fn = variable_length_sft_loss_fn(tok.mask_id)
    print(
        f"{args.recipe}: {len(data.train)} training examples, {len(data.held_out)} held out; "
        f"{positions:.0f} token positions per step (LLaDA's padded batch of {args.batch_size}: "
        f"{llada_positions:.0f})",
        flush=True,
    )
    cfg = TrainConfig(
        max_iters=args.iters,
        batch_size=batch_size,
        lr=args.lr,
        min_lr=args.min_lr,
        warmup_iters=args.warmup,
        eval_interval=args.eval_interval,
        seed=args.seed,
    )
    probe_items = [e for es in data.by_task().values() for e in es[: args.eval_per_task]]
    curve: dict[str, list] = {"iter": [], "correct": [], "n": len(probe_items)}

    def evaluate(m: torch.nn.Module) -> float:
        """Exact-match accuracy on a few held-out items per task (variable length), logged."""
        s = evaluate_instructions(
            m, tok, probe_items, "variable", args.gen_length, args.block_length, progress=False
        )
        curve["correct"].append({task: score.correct for task, score in s.items()})
        print(f"  {' '.join(f'{t} {c}' for t, c in curve['correct'][-1].items())}", flush=True)
        return s["all"].accuracy

    t0 = time.perf_counter()
    state = train(model, get_batch, loss_fn, cfg, evaluate=evaluate if args.eval_interval else None)
    seconds = time.perf_counter() - t0
    curve["iter"] = state.history["val_iter"]
    print(f"trained {args.iters} iterations in {seconds:.0f} s", flush=True)
    evaluation = {}
    for sampler in () if args.no_final_eval else SAMPLERS:
        scores = evaluate_instructions(
            model, tok, data.held_out, sampler, args.gen_length, args.block_length
        )
        for s in scores.values():
            print(f"{sampler:8s} {s}", flush=True)
        evaluation[sampler] = _scores_record(scores)
    out = Path(args.out)
    save_hf_checkpoint(model, out)
    save_tokenizer(tok.tokenizer, out)
    loss = state.history["loss"]
    every = max(1, len(loss) // 200)
    record = {
        "command": "python -m minillada.cli.train_sft " + " ".join(argv or sys.argv[1:]),
        "recipe": args.recipe,
        "base": str(base.name),
        "train_config": vars(args)
        | {
            "batch": batch_size,
            "token_positions_per_step": positions,
            "llada_positions_per_step": llada_positions,
        },
        "train_seconds": round(seconds, 1),
        "loss_curve": {
            "iter": list(range(0, len(loss), every)),
            "loss": [
                sum(loss[i : i + every]) / len(loss[i : i + every])
                for i in range(0, len(loss), every)
            ],
        },
        "held_out_curve": curve,
        "evaluation": {
            "gen_length": args.gen_length,
            "block_length": args.block_length,
            **evaluation,
        },
    }
    (out / METRICS_FILE).write_text(json.dumps(record, indent=1) + "\n")
    if args.ship:
        shutil.copytree(out, args.ship, dirs_exist_ok=True)
        print(f"shipped to {args.ship}")
    return record


if __name__ == "__main__":
    main()
