"""Train lesson 1's character-level masked diffusion model from the command line.

    python -m minillada.cli.train_char --out runs/char --iters 2000

The shipped checkpoint data/checkpoints/char_shakespeare was made with the command recorded in
data/README.md. The run saves a resumable checkpoint every --save-every iterations and at the end;
``--resume`` continues from the one in --out.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

from minillada.checkpoints.folder import load_weights, read_config, save_checkpoint
from minillada.checkpoints.train_state import ResumeError, check_resume_settings, load_train_state
from minillada.data.char import CharTokenizer, eval_windows, get_batch, load_char_corpus
from minillada.diffusion.likelihood import estimate_nelbo
from minillada.diffusion.objectives import diffusion_loss
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.training.loop import TrainConfig, TrainState, new_train_state, train


def char_training_parser(description: str | None) -> argparse.ArgumentParser:
    """The arguments every lesson-1-sized training CLI shares (train_char, train_ar): model shape,
    optimisation, evaluation and checkpointing."""
    ap = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", required=True, help="checkpoint folder")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument(
        "--positions", choices=["rope", "learned"], default="rope", help="position encoding"
    )
    # lesson 1's values: at 2,000 iterations peak lr 2e-3 reached a bound 0.09 nats/char lower
    # than 1e-3 (bench/lesson1_quality.md)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-interval", type=int, default=500)
    ap.add_argument("--eval-windows", type=int, default=200)
    ap.add_argument("--save-every", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    return ap


@dataclass
class CharRun:
    """What a lesson-1-sized training CLI sets up from its arguments (train_char, train_ar)."""

    tok: CharTokenizer
    train_ids: torch.Tensor
    val_ids: torch.Tensor
    model: TinyTransformer
    train_cfg: TrainConfig
    state: TrainState
    out: Path

    def save(self, **extra) -> None:
        """Write the resumable checkpoint to ``out``: settings, iteration and ``extra``."""
        info = {"train": asdict(self.train_cfg), "iter_num": self.state.iter_num, **extra}
        save_checkpoint(self.out, self.model, self.tok, self.state, extra=info)

    @property
    def train_seconds(self) -> float:
        """Seconds in the training loop over every session of this run, resumes included."""
        return round(sum(self.state.history.get("seconds", [])), 1)


def start_char_run(args: argparse.Namespace, causal: bool = False) -> CharRun:
    """Corpus, model (seeded), optimizer state, and the checkpoint in --out if --resume."""
    if args.threads:
        torch.set_num_threads(args.threads)
    tok, train_ids, val_ids = load_char_corpus()
    model_cfg = TinyTransformerConfig(
        vocab_size=tok.vocab_size,
        block_size=args.block_size,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
        positions=args.positions,
        causal=causal,
    )
    train_cfg = TrainConfig(
        max_iters=args.iters,
        batch_size=args.batch_size,
        lr=args.lr,
        min_lr=args.min_lr,
        warmup_iters=args.warmup,
        eval_interval=args.eval_interval,
        seed=args.seed,
    )
    model = TinyTransformer(model_cfg, generator=torch.Generator().manual_seed(args.seed))
    state = new_train_state(model, train_cfg)
    out = Path(args.out)
    if args.resume:  # the run's own settings, or a clear refusal before loading anything
        try:
            check_resume_settings(read_config(out).get("train"), train_cfg, out)
        except ResumeError as err:
            raise SystemExit(str(err)) from None
        load_weights(model, out)
        load_train_state(out, state)
        print(f"resumed at iteration {state.iter_num}")
    print(f"{model.num_parameters():,} parameters; training to iteration {args.iters}")
    return CharRun(tok, train_ids, val_ids, model, train_cfg, state, out)


def train_with_checkpoints(
    run: CharRun, loss_fn, evaluate, save_every: int, val_name: str, **extra
) -> None:
    """Train to max_iters, saving a resumable checkpoint every ``save_every`` iterations."""
    block_size = run.model.config.block_size
    batches = partial(get_batch, run.train_ids, run.train_cfg.batch_size, block_size)
    t0 = time.perf_counter()
    while run.state.iter_num < run.train_cfg.max_iters:
        run.state = train(
            run.model, batches, loss_fn, run.train_cfg, run.state, evaluate, stop_after=save_every
        )
        run.save(**extra)
        history = run.state.history
        last_val = history["val"][-1] if history["val"] else float("nan")
        print(
            f"iter {run.state.iter_num}: loss {history['loss'][-1]:.3f}, "
            f"{val_name} {last_val:.3f} nats/char, {time.perf_counter() - t0:.0f}s",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    ap = char_training_parser(__doc__)
    ap.add_argument(
        "--final-samples", type=int, default=16, help="t samples per window, final bound"
    )
    ap.add_argument("--final-windows", type=int, default=0, help="0 = every validation window")
    args = ap.parse_args(argv)
    run = start_char_run(args)
    tok, model, val_ids = run.tok, run.model, run.val_ids
    val_windows = eval_windows(val_ids, args.block_size, args.eval_windows)
    loss_fn = partial(_loss, mask_id=tok.mask_id)
    evaluate = partial(_val_bound, windows=val_windows, mask_id=tok.mask_id)
    train_with_checkpoints(run, loss_fn, evaluate, args.save_every, "val bound")
    final_windows = eval_windows(val_ids, args.block_size, args.final_windows or None)
    full = estimate_nelbo(model, final_windows, tok.mask_id, samples=args.final_samples)
    print(f"final validation bound: {full}")
    metrics = {
        "val_nelbo_nats": full.nats,
        "val_nelbo_stderr": full.stderr,
        "val_windows": full.n,
        "samples_per_window": args.final_samples,
        "train_seconds": run.train_seconds,
    }
    run.save(metrics=metrics)
    print(json.dumps(metrics))


def _loss(model, batch, generator, mask_id):
    return diffusion_loss(model, batch, mask_id, stratified=True, generator=generator)


def _val_bound(model, windows, mask_id):
    return estimate_nelbo(model, windows, mask_id, samples=2).nats


if __name__ == "__main__":
    main()
