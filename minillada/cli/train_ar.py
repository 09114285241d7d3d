"""Train lesson 3's autoregressive twin of lesson 1's model from the command line.

    python -m minillada.cli.train_ar --out runs/ar --iters 10000

Same network (TinyTransformer with ``causal=True``), same data, batch, context, optimizer, schedule
and seed as ``minillada.cli.train_char``; only the loss changes (next-token cross-entropy). Equal
iterations x batch x context means equal FLOPs and equal wall time per run, since the two networks
are the same size and do the same forward and backward work per window (see lesson 3). The shipped
checkpoint data/checkpoints/ar_shakespeare was made with the command recorded in data/README.md.
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

from minillada.cli.train_char import char_training_parser, start_char_run, train_with_checkpoints
from minillada.data.char import eval_windows
from minillada.evaluation.autoregressive import ar_loss_fn, exact_nll


def main(argv: list[str] | None = None) -> None:
    ap = char_training_parser(__doc__)
    ap.add_argument(
        "--compare-with",
        default=None,
        help="a train_char run folder (with trainer_state.json): its validation curve is written "
        "next to this run's in curves.json, for lesson 3's plot",
    )
    ap.add_argument(
        "--ship",
        default=None,
        help="after training, copy config.json, model.safetensors and curves.json "
        "(no optimizer state) into this folder, e.g. data/checkpoints/ar_shakespeare",
    )
    args = ap.parse_args(argv)
    run = start_char_run(args, causal=True)
    tok, model, val_ids = run.tok, run.model, run.val_ids
    bos_id = tok.mask_id  # the AR model never sees a mask: its id serves as start-of-window
    val_windows = eval_windows(val_ids, args.block_size, args.eval_windows)
    loss_fn = partial(ar_loss_fn, bos_id=bos_id)
    evaluate = partial(_val_nll, windows=val_windows, bos_id=bos_id)
    train_with_checkpoints(run, loss_fn, evaluate, args.save_every, "val NLL", bos_id=bos_id)
    history, out = run.state.history, run.out
    full = exact_nll(model, eval_windows(val_ids, args.block_size), bos_id)
    print(f"final validation NLL (all val windows, exact): {full}")
    metrics = {
        "val_nll_nats": full.nats,
        "val_nll_stderr": full.stderr,
        "val_windows": full.n,
        "train_seconds": run.train_seconds,
    }
    curve = {"val_iter": history["val_iter"], "val": history["val"]}
    run.save(bos_id=bos_id, metrics=metrics, curve=curve)
    print(json.dumps(metrics))
    write_curves(out, history, args.compare_with, args.block_size, args.eval_windows)
    if args.ship:
        ship = Path(args.ship)
        ship.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "model.safetensors", "curves.json"):
            shutil.copyfile(out / name, ship / name)
        print(f"shipped to {ship}")


def write_curves(
    out: Path, history: dict, compare_with: str | None, block_size: int, eval_windows: int
) -> None:
    """curves.json: this run's validation curve and optionally a train_char run's (lesson 3)."""
    curves = {
        "ar": {"val_iter": history["val_iter"], "val_nats": history["val"], "source": "exact NLL"}
    }
    if compare_with:
        mdm = json.loads((Path(compare_with) / "trainer_state.json").read_text())["history"]
        curves["mdm"] = {
            "val_iter": mdm["val_iter"],
            "val_nats": mdm["val"],
            "source": "t-estimator bound, 2 samples per window",
        }
    curves["windows"] = f"eval_windows(val, {block_size}, {eval_windows})"
    (out / "curves.json").write_text(json.dumps(curves, indent=1))


def _val_nll(model, windows, bos_id):
    return exact_nll(model, windows, bos_id).nats


if __name__ == "__main__":
    main()
