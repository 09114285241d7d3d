"""Reinforcement learning with verifiable rewards on lesson 6's tasks (lesson 9).

    python -m minillada.cli.train_rl --out runs/rl_grpo --iters 300
    python -m minillada.cli.train_rl --out runs/rl_grpo --iters 600 --resume   # go on
    python -m minillada.cli.train_rl --out runs/rl_wd1 --method wd1 --estimator elbo

Starts from lesson 6's shipped instruct model (or ``--base``), draws RL prompts from the training
instructions of ``--tasks`` (the held-out items are never seen), and trains with
``minillada.training.rl`` (GRPO as d1 codes it, or wd1), fully or through LoRA adapters
(``--lora-rank``). Every ``--save-every`` iterations (a multiple of ``--inner-updates``: a
checkpoint sits at a rollout boundary) the folder gets the weights (LLaDA layout), the optimizer,
the trainer state and, with LoRA, ``lora.safetensors``; ``--resume`` with the run's own flags
(only ``--iters`` may change; other flags are refused) continues exactly. At the end
the held-out instructions are answered with both samplers and training.json records the command,
the settings, the curves and the scores; a LoRA run also writes the merged model to ``merged/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from minillada.checkpoints.hf import load_hf_checkpoint, save_hf_checkpoint
from minillada.checkpoints.shipped import INSTRUCT_SHAKESPEARE, METRICS_FILE, shipped_checkpoint
from minillada.checkpoints.train_state import (
    ResumeError,
    check_resume_folder,
    load_training_checkpoint,
    save_training_checkpoint,
)
from minillada.data.bpe import save_tokenizer
from minillada.data.downloads import load_text
from minillada.data.instructions import TASKS, encode_example, make_instruction_data
from minillada.data.tokenizer import LLaDATokenizer
from minillada.evaluation.instructions import SAMPLERS, evaluate_instructions
from minillada.evaluation.rewards import exact_match, partial_credit
from minillada.models.lora import (
    AdaptersOff,
    adapters_detached,
    add_lora,
    lora_state_dict,
    remove_lora,
)
from minillada.training.loop import new_train_state
from minillada.training.rl import RLConfig, train_rl

LORA_FILE = "lora.safetensors"
REWARDS = {"exact": exact_match, "partial": partial_credit}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = RLConfig()
    ap.add_argument("--out", required=True, help="checkpoint folder")
    ap.add_argument("--base", default=None, help="starting model (default: lesson 6's shipped)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out")
    ap.add_argument("--iters", type=int, default=d.max_iters, help="optimizer steps in all")
    ap.add_argument("--save-every", type=int, default=50)
    ap.add_argument("--method", choices=("grpo", "wd1"), default=d.method)
    ap.add_argument(
        "--estimator", choices=("one_step", "elbo", "trajectory", "block"), default=d.estimator
    )
    ap.add_argument(
        "--sampler",
        choices=("fixed", "variable"),
        default=d.sampler,
        help="the rollouts' sampler (variable: iLLaDA's, with --estimator block to match it)",
    )
    ap.add_argument("--p-mask", type=float, default=d.p_mask)
    ap.add_argument("--elbo-draws", type=int, default=d.elbo_draws)
    ap.add_argument(
        "--trajectory-group",
        type=int,
        default=d.trajectory_group,
        help="trajectory: sampler steps per scoring pass (1: each token on its canvas)",
    )
    ap.add_argument("--complementary", action="store_true")
    ap.add_argument("--prompts-per-step", type=int, default=d.prompts_per_step)
    ap.add_argument("--group-size", type=int, default=d.group_size)
    ap.add_argument("--inner-updates", type=int, default=d.inner_updates)
    ap.add_argument("--clip-eps", type=float, default=d.clip_eps)
    ap.add_argument("--beta", type=float, default=d.beta, help="k3 KL weight to the start model")
    ap.add_argument("--advantage-scale", choices=("none", "std"), default=d.advantage_scale)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--grad-clip", type=float, default=d.grad_clip)
    ap.add_argument("--reward", choices=sorted(REWARDS), default="exact")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks to train on")
    ap.add_argument("--gen-length", type=int, default=d.gen_length)
    ap.add_argument("--block-length", type=int, default=d.block_length)
    ap.add_argument("--steps", type=int, default=d.steps, help="denoising steps per rollout")
    ap.add_argument("--temperature", type=float, default=d.temperature)
    ap.add_argument(
        "--count-padding",
        action="store_true",
        help="the loss counts every canvas token, not only the answer and its stop",
    )
    ap.add_argument("--lora-rank", type=int, default=0, help="0: train every weight")
    ap.add_argument("--lora-alpha", type=float, default=16.0)
    ap.add_argument("--train-per-task", type=int, default=10000)
    ap.add_argument("--held-out-per-task", type=int, default=100)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--eval-interval", type=int, default=0, help="held-out probe; 0 = never")
    ap.add_argument("--eval-per-task", type=int, default=10)
    ap.add_argument("--final-eval", choices=("both", "none"), default="both")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=d.seed)
    return ap


def score_held_out(model, tok, items, sampler: str, gen_length: int, block_length: int) -> dict:
    """Exact match per task with both intervals, and every item's grade in order (``correct``)
    for a paired test against another model on the same items. 32 prompts per forward pass:
    at temperature 0 each answer is the one it gets alone."""
    scores = evaluate_instructions(model, tok, items, sampler, gen_length, block_length,
                                   progress=False, batch_size=32)  # fmt: skip
    for s in scores.values():
        print(f"{sampler:8s} {s}", flush=True)
    record = {t: s.record(lengths=t == "all") for t, s in scores.items()}
    record["all"]["correct_items"] = [a.correct for a in scores["all"].answers]
    return record


def _save(out: Path, model, state, cfg: RLConfig, lora: bool, extra: dict) -> None:
    if lora:
        out.mkdir(parents=True, exist_ok=True)
        save_file(lora_state_dict(model), str(out / LORA_FILE))
        with adapters_detached(model):
            save_training_checkpoint(out, model, state, cfg, extra=extra)
    else:
        save_training_checkpoint(out, model, state, cfg, extra=extra)


def _resume(out: Path, model, state, lora: bool):
    if lora:
        if not (out / LORA_FILE).exists():
            raise FileNotFoundError(
                f"{out} has no {LORA_FILE}: it was not a LoRA run; resume without --lora-rank"
            )
        with adapters_detached(model):
            state = load_training_checkpoint(out, model, state)
        missing, unexpected = model.load_state_dict(load_file(str(out / LORA_FILE)), strict=False)
        if unexpected or any(".lora." in k for k in missing):
            raise ValueError(f"{out / LORA_FILE} does not fit --lora-rank; unexpected {unexpected}")
        return state
    if (out / LORA_FILE).exists():
        raise ValueError(f"{out} is a LoRA run: resume it with the same --lora-rank")
    return load_training_checkpoint(out, model, state)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise SystemExit(f"--tasks: unknown {unknown}; choose from {', '.join(TASKS)}")
    cfg = RLConfig(
        max_iters=args.iters, lr=args.lr, min_lr=args.lr, grad_clip=args.grad_clip,
        eval_interval=args.eval_interval, seed=args.seed,
        prompts_per_step=args.prompts_per_step, group_size=args.group_size,
        inner_updates=args.inner_updates, method=args.method, estimator=args.estimator,
        sampler=args.sampler,
        p_mask=args.p_mask, elbo_draws=args.elbo_draws, complementary=args.complementary,
        trajectory_group=args.trajectory_group,
        clip_eps=args.clip_eps, beta=args.beta, advantage_scale=args.advantage_scale,
        gen_length=args.gen_length, block_length=args.block_length, steps=args.steps,
        temperature=args.temperature, count_padding=args.count_padding,
    )  # fmt: skip
    cfg.check()
    if args.save_every % cfg.inner_updates:
        raise SystemExit(
            f"--save-every {args.save_every} must be a multiple of --inner-updates "
            f"{cfg.inner_updates}: a checkpoint must sit at a rollout boundary to resume exactly"
        )
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise SystemExit(f"{out} is not empty: pass --resume to continue it, or another --out")
    base = Path(args.base) if args.base else shipped_checkpoint(INSTRUCT_SHAKESPEARE)
    extra = {"base": str(base), "tasks": tasks, "reward": args.reward, "lora_rank": args.lora_rank,
             "train_per_task": args.train_per_task, "held_out_per_task": args.held_out_per_task,
             "data_seed": args.data_seed}  # fmt: skip
    if args.resume:  # the run's own settings (all but --iters), or a refusal before any work
        try:
            check_resume_folder(out, cfg, extra=extra)
        except ResumeError as err:
            raise SystemExit(str(err)) from None
    model = load_hf_checkpoint(base, dtype=torch.float32)
    tok = LLaDATokenizer.from_folder(base)
    data = make_instruction_data(
        load_text(), args.train_per_task, args.held_out_per_task, args.data_seed
    )
    pool = [e for e in data.train if e.task in tasks]
    prompts = [encode_example(tok, e)[0] for e in pool]
    reward = REWARDS[args.reward]

    def grade(index: int, text: str) -> float:
        return reward(text, pool[index].answer)

    lora = args.lora_rank > 0
    reference = None
    if lora:
        add_lora(model, rank=args.lora_rank, alpha=args.lora_alpha, seed=args.seed)
        reference = AdaptersOff(model)
    elif cfg.beta > 0:
        reference = load_hf_checkpoint(base, dtype=torch.float32).eval()
    state = new_train_state(model, cfg)
    if args.resume:
        state = _resume(out, model, state, lora)
        print(f"resumed at iteration {state.iter_num}", flush=True)
    probe = [e for es in data.by_task().values() for e in es[: args.eval_per_task]]

    def evaluate(m: torch.nn.Module) -> float:
        """Exact match on a few held-out items per task (variable length)."""
        s = evaluate_instructions(m, tok, probe, "variable", args.gen_length, args.block_length,
                                  progress=False)  # fmt: skip
        print(f"  held-out probe {s['all'].correct}/{s['all'].n}", flush=True)
        return s["all"].accuracy

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"{len(prompts)} RL prompts from {', '.join(tasks)}; {trainable:,} trainable parameters; "
        f"{cfg.prompts_per_step} prompts x {cfg.group_size} completions per rollout, "
        f"{cfg.inner_updates} updates each; to iteration {cfg.max_iters}",
        flush=True,
    )
    t0 = time.perf_counter()
    while state.iter_num < cfg.max_iters:
        state = train_rl(
            model, tok, prompts, grade, cfg, state, reference, stop_after=args.save_every,
            evaluate=evaluate if args.eval_interval else None, labels=[e.task for e in pool],
        )  # fmt: skip
        _save(out, model, state, cfg, lora, extra)
        recent = state.history["reward"][-args.save_every :]
        print(
            f"iter {state.iter_num}: mean reward {sum(recent) / len(recent):.3f}, "
            f"{time.perf_counter() - t0:.0f}s",
            flush=True,
        )
    save_tokenizer(tok.tokenizer, out)
    final = out
    if lora:
        remove_lora(model, merge=True)
        final = out / "merged"
        save_hf_checkpoint(model, final)
        save_tokenizer(tok.tokenizer, final)
    evaluation = {}
    if args.final_eval == "both":
        for sampler in SAMPLERS:
            evaluation[sampler] = score_held_out(
                model, tok, data.held_out, sampler, args.gen_length, args.block_length
            )
    record = {
        "command": "python -m minillada.cli.train_rl " + " ".join(argv or sys.argv[1:]),
        "rl_config": asdict(cfg),
        **extra,
        "train_seconds": round(sum(state.history.get("seconds", [])), 1),
        "history": {k: v for k, v in state.history.items() if k != "lr"},
        "evaluation": {"gen_length": args.gen_length, "block_length": args.block_length,
                       **evaluation},
    }  # fmt: skip
    (final / METRICS_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
