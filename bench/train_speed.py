"""Training throughput of lesson 1's masked diffusion model against nanoGPT's model of the same
shape.

nanoGPT is not a dependency: clone it yourself and point --nanogpt at the clone
(git clone https://github.com/karpathy/nanoGPT). Both models train on the same Tiny Shakespeare
batches
with the same AdamW settings, gradient clipping and thread count, in fp32 on the CPU; repeats are
interleaved so that background load hits both equally. Tokens per second = batch * context * iters /
s.

    python bench/train_speed.py --nanogpt ../nanoGPT --out bench/train_speed.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minillada.char_data import CharTokenizer, get_batch, train_val_split  # noqa: E402
from minillada.datasets import load_text  # noqa: E402
from minillada.objectives import diffusion_loss  # noqa: E402
from minillada.runtime import environment_report  # noqa: E402
from minillada.tiny_transformer import TinyTransformer, TinyTransformerConfig  # noqa: E402


def load_nanogpt(path: Path):
    spec = importlib.util.spec_from_file_location("nanogpt_model", path / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_steps(step, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return time.perf_counter() - t0


def make_step(model, loss_of_batch, batches):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    state = {"i": 0}

    def step():
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        loss = loss_of_batch(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nanogpt", type=Path, required=True, help="path to a nanoGPT clone")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    nanogpt = load_nanogpt(args.nanogpt)
    text = load_text("tinyshakespeare")
    tok = CharTokenizer.from_text(text)
    train_ids, _ = train_val_split(tok.encode(text))
    g = torch.Generator().manual_seed(0)
    results = {"machine": environment_report(), "iters_per_repeat": args.iters, "runs": []}

    # (name, context, batch): nanoGPT's CPU configuration, then the lesson's shape.
    for shape_name, block, batch in [("nanoGPT CPU config", 64, 12), ("lesson 1 config", 128, 32)]:
        batches = [get_batch(train_ids, batch, block + 1, g) for _ in range(50)]
        for threads in args.threads:
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            ours = TinyTransformer(
                TinyTransformerConfig(
                    vocab_size=tok.vocab_size, block_size=block, n_layer=4, n_head=4, n_embd=128
                )
            )
            ref = nanogpt.GPT(
                nanogpt.GPTConfig(
                    block_size=block,
                    vocab_size=65,
                    n_layer=4,
                    n_head=4,
                    n_embd=128,
                    dropout=0.0,
                    bias=True,
                )
            )
            ours_step = make_step(
                ours, lambda m, b: diffusion_loss(m, b[:, :-1], tok.mask_id), batches
            )
            ref_step = make_step(
                ref, lambda m, b: m(b[:, :-1].contiguous(), b[:, 1:].contiguous())[1], batches
            )
            t_ours, t_ref = [], []
            for _ in range(args.repeats):  # interleaved
                t_ours.append(time_steps(ours_step, args.iters, 5))
                t_ref.append(time_steps(ref_step, args.iters, 5))
            tokens = args.iters * batch * block
            row = {
                "shape": shape_name,
                "context": block,
                "batch": batch,
                "threads": threads,
                "params_minillada": sum(p.numel() for p in ours.parameters()),
                "params_nanogpt": sum(p.numel() for p in ref.parameters()),
                "tok_per_s_minillada": tokens / statistics.median(t_ours),
                "tok_per_s_nanogpt": tokens / statistics.median(t_ref),
            }
            row["ratio"] = row["tok_per_s_minillada"] / row["tok_per_s_nanogpt"]
            results["runs"].append(row)
            print(
                f"{shape_name:20s} threads={threads}: minillada {row['tok_per_s_minillada']:8.0f} "
                f"tok/s, "
                f"nanoGPT {row['tok_per_s_nanogpt']:8.0f} tok/s, ratio {row['ratio']:.2f}",
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
