"""Train a subword LLaDAModel on Tiny Shakespeare, on one process or many (lesson 4).

One process (CPU or one GPU):

    python -m minillada.cli.train_llada --out runs/subword --iters 3000

Several processes (DistributedDataParallel; gloo on the CPU, nccl on GPUs), same global batch:

    torchrun --standalone --nproc_per_node 2 -m minillada.cli.train_llada --out runs/subword ...

The global batch (--batch-size) is split into grad_accum x world_size equal chunks; chunk c of step
s is drawn from a generator seeded by (seed, s, c), so any split gives the same training run up to
float rounding. Rank 0 writes the checkpoints (LLaDA layout: config.json + model.safetensors, plus
optimizer.safetensors and trainer_state.json for resuming, and the tokenizer files);
``--resume`` continues from the one in --out exactly where it stopped. The shipped checkpoint
data/checkpoints/subword_shakespeare was made with the command recorded in data/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from minillada.checkpoints.shipped import ship_subword_run
from minillada.checkpoints.train_state import (
    ResumeError,
    check_resume_folder,
    load_training_checkpoint,
    save_training_checkpoint,
)
from minillada.data.bpe import save_tokenizer
from minillada.data.subword import (
    DEFAULT_VOCAB_SIZE,
    bits_per_char,
    load_subword_corpus,
    train_shakespeare_tokenizer,
    val_windows,
)
from minillada.diffusion.likelihood import estimate_nelbo
from minillada.models.llada import LLaDAModel, preset
from minillada.training.distributed import barrier, rank_and_world, setup_distributed
from minillada.training.llada import LLaDATrainConfig, new_llada_state, train_llada


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", required=True, help="checkpoint folder")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder (default: train one)")
    ap.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    ap.add_argument("--preset", default="small", help="LLaDAConfig preset for the trunk")
    ap.add_argument("--d-model", type=int, default=None)
    ap.add_argument("--n-layers", type=int, default=None)
    ap.add_argument("--n-heads", type=int, default=None)
    ap.add_argument("--mlp-hidden", type=int, default=None)
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=32, help="global batch (all processes)")
    ap.add_argument("--grad-accum", type=int, default=1, help="chunks per process per step")
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--decay", type=int, default=None, help="WSD decay iterations (default 20%%)")
    ap.add_argument("--crop-prob", type=float, default=0.01)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU only)")
    ap.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default="float32",
        help="weights and optimizer state (float64: for exact comparisons of runs, e.g. tests)",
    )
    ap.add_argument("--eval-interval", type=int, default=500)
    ap.add_argument("--eval-windows", type=int, default=100)
    ap.add_argument("--final-samples", type=int, default=16, help="0 = no final evaluation")
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--ship", default=None, help="also write the release folder here (see ship)")
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = setup_distributed()
    rank, world = rank_and_world()
    out = Path(args.out)
    log = print if rank == 0 else (lambda *a, **k: None)

    tok_dir = Path(args.tokenizer) if args.tokenizer else out
    if args.tokenizer is None and not (out / "tokenizer.json").is_file():
        if rank == 0:
            train_shakespeare_tokenizer(out, args.vocab_size)
        barrier()
    corpus = load_subword_corpus(tok_dir)
    if args.tokenizer is not None and rank == 0:  # ship the tokenizer with the weights
        save_tokenizer(corpus.tokenizer.tokenizer, out)
    tok = corpus.tokenizer
    overrides = {
        k: v
        for k, v in {
            "d_model": args.d_model,
            "n_layers": args.n_layers,
            "n_heads": args.n_heads,
            "n_kv_heads": args.n_heads,
            "mlp_hidden_size": args.mlp_hidden,
        }.items()
        if v is not None
    }
    model_cfg = preset(
        args.preset,
        vocab_size=tok.vocab_size,
        embedding_size=tok.vocab_size,
        max_sequence_length=args.block_size,
        mask_token_id=tok.mask_id,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
        **overrides,
    )
    cfg = LLaDATrainConfig(
        max_iters=args.iters,
        batch_size=args.batch_size,
        lr=args.lr,
        min_lr=args.min_lr,
        warmup_iters=args.warmup,
        weight_decay=args.weight_decay,
        eval_interval=args.eval_interval,
        seed=args.seed,
        block_size=args.block_size,
        grad_accum=args.grad_accum,
        decay_iters=args.decay if args.decay is not None else args.iters // 5,
        crop_prob=args.crop_prob,
        bf16=args.bf16,
    )
    if args.resume:  # the run's own settings, or a clear refusal before any work
        try:  # the decay's start follows --iters unless --decay is given
            check_resume_folder(
                out, cfg, may_change=() if args.decay is not None else ("decay_iters",)
            )
        except ResumeError as err:
            raise SystemExit(str(err)) from None
    dtype = getattr(torch, args.dtype)
    model = LLaDAModel(model_cfg, generator=torch.Generator().manual_seed(args.seed))
    model = model.to(device=device, dtype=dtype)
    state = new_llada_state(model, cfg)
    if args.resume:
        load_training_checkpoint(out, model, state)
        log(f"resumed at iteration {state.iter_num}")
    if world > 1:
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    log(
        f"{sum(p.numel() for p in model.parameters()):,} parameters, vocabulary {tok.vocab_size}, "
        f"{len(corpus.train_ids):,} training tokens ({corpus.chars_per_token:.2f} chars/token); "
        f"{world} process(es) x {cfg.grad_accum} chunk(s) of "
        f"{cfg.batch_size // (world * cfg.grad_accum)}; training to iteration {cfg.max_iters}"
    )

    windows, _ = val_windows(corpus, args.block_size, args.eval_windows)

    def evaluate(m: torch.nn.Module) -> float:
        return estimate_nelbo(m, windows, tok.mask_id, samples=2).nats

    t0 = time.perf_counter()
    extra = {"tokenizer_chars_per_token": corpus.chars_per_token, "world_size": world}
    while state.iter_num < cfg.max_iters:
        state = train_llada(
            model, corpus.train_ids, tok.mask_id, cfg, state, evaluate, stop_after=args.save_every
        )
        save_training_checkpoint(out, model, state, cfg, extra=extra)
        val = state.history["val"][-1] if state.history["val"] else float("nan")
        log(
            f"iter {state.iter_num}: loss {state.history['loss'][-1]:.3f}, "
            f"val bound {val:.3f} nats/token, {time.perf_counter() - t0:.0f}s",
            flush=True,
        )
    metrics: dict = {}
    if args.final_samples and rank == 0:
        inner = model.module if world > 1 else model
        all_windows, chars = val_windows(corpus, args.block_size)
        full = estimate_nelbo(inner, all_windows, tok.mask_id, samples=args.final_samples)
        bpc = bits_per_char(full.nats, all_windows.numel(), chars)
        log(f"final validation bound: {full}; = {bpc:.3f} bits/char")
        metrics = {
            "val_nelbo_nats_per_token": full.nats,
            "val_nelbo_stderr": full.stderr,
            "val_bits_per_char": bpc,
            "val_windows": full.n,
            "val_tokens": all_windows.numel(),
            "val_chars": chars,
            "samples_per_window": args.final_samples,
            "train_seconds": round(sum(state.history.get("seconds", [])), 1),
        }
        extra["metrics"] = metrics
    save_training_checkpoint(out, model, state, cfg, extra=extra)
    log(json.dumps({"train": asdict(cfg), "metrics": metrics}))
    if args.ship and rank == 0:
        command = "python -m minillada.cli.train_llada " + " ".join(argv or sys.argv[1:])
        log(f"shipped to {ship_subword_run(out, Path(args.ship), command)}")
    if world > 1:
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    main()
