"""Training throughput of lesson 1's masked diffusion model vs nanoGPT's model of the same shape.

nanoGPT is not a dependency: clone it yourself and point --nanogpt at the clone
(git clone https://github.com/karpathy/nanoGPT). Both models train in fp32 on the CPU on the same
Tiny Shakespeare batches, with lr 1e-3, betas (0.9, 0.99), weight decay 0.1, gradient clipping at 1
and the same thread count; nanoGPT as its CPU command trains it (bias=False, dropout 0).

The headline ratio takes each training step as its own code builds it: minillada's optimizer from
``training.make_optimizer`` (fused AdamW), nanoGPT's from ``GPT.configure_optimizers`` (it fuses
on CUDA only). For the models alone, both also run with the same plain ``torch.optim.AdamW``; and
lesson 1's model runs with ``fast_rope=False`` (rotate-half RoPE written out). Repeats are
interleaved so that background load hits all variants equally.
Tokens per second = batch * context * iters / s.

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

from minillada.data.char import CharTokenizer, get_batch, train_val_split  # noqa: E402
from minillada.data.downloads import load_text  # noqa: E402
from minillada.diffusion.objectives import diffusion_loss  # noqa: E402
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig  # noqa: E402
from minillada.runtime import environment_report  # noqa: E402
from minillada.training.loop import TrainConfig, make_optimizer  # noqa: E402


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


def plain_adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)


def make_step(model, optimizer, loss_of_batch, batches):
    state = {"i": 0}

    def step():
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        loss = loss_of_batch(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def ours(tok, block: int, **kw) -> TinyTransformer:
    torch.manual_seed(0)
    shape = dict(vocab_size=tok.vocab_size, block_size=block, n_layer=4, n_head=4, n_embd=128)
    return TinyTransformer(TinyTransformerConfig(**shape, **kw))


def theirs(nanogpt, block: int):
    torch.manual_seed(0)
    cfg = nanogpt.GPTConfig(
        block_size=block, vocab_size=65, n_layer=4, n_head=4, n_embd=128, dropout=0.0,
        bias=False,  # nanoGPT's train.py default, which its CPU command keeps
    )  # fmt: skip
    return nanogpt.GPT(cfg)


def build_variants(nanogpt, tok, block: int, batches) -> dict:
    """name -> one training step, each with its own model, optimizer and loss."""
    train_cfg = TrainConfig(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)

    def diffusion(m, b):
        return diffusion_loss(m, b[:, :-1], tok.mask_id)

    def next_token(m, b):
        return m(b[:, :-1].contiguous(), b[:, 1:].contiguous())[1]

    def own_step(model):  # each as its own training code sets it up
        if isinstance(model, TinyTransformer):
            return make_step(model, make_optimizer(model, train_cfg), diffusion, batches)
        opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
        return make_step(model, opt, next_token, batches)

    def plain_step(model):
        loss = diffusion if isinstance(model, TinyTransformer) else next_token
        return make_step(model, plain_adamw(model), loss, batches)

    return {
        "minillada": own_step(ours(tok, block)),
        "nanogpt": own_step(theirs(nanogpt, block)),
        "minillada_plain_adamw": plain_step(ours(tok, block)),
        "nanogpt_plain_adamw": plain_step(theirs(nanogpt, block)),
        "minillada_readable_rope": own_step(ours(tok, block, fast_rope=False)),
    }


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
            variants = build_variants(nanogpt, tok, block, batches)
            seconds = {name: [] for name in variants}
            for _ in range(args.repeats):  # interleaved
                for name, step in variants.items():
                    seconds[name].append(time_steps(step, args.iters, 5))
            tokens = args.iters * batch * block
            row = {"shape": shape_name, "context": block, "batch": batch, "threads": threads}
            row["params_minillada"] = sum(p.numel() for p in ours(tok, block).parameters())
            row["params_nanogpt"] = sum(p.numel() for p in theirs(nanogpt, block).parameters())
            for name, times in seconds.items():
                row[f"tok_per_s_{name}"] = tokens / statistics.median(times)
            row["ratio"] = row["tok_per_s_minillada"] / row["tok_per_s_nanogpt"]
            # repeat by repeat (the two ran back to back): how much the ratio itself scatters
            row["ratio_per_repeat"] = [
                ref / own for own, ref in zip(seconds["minillada"], seconds["nanogpt"], strict=True)
            ]
            row["ratio_plain_adamw"] = (
                row["tok_per_s_minillada_plain_adamw"] / row["tok_per_s_nanogpt_plain_adamw"]
            )
            results["runs"].append(row)
            spread = f"{min(row['ratio_per_repeat']):.3f}-{max(row['ratio_per_repeat']):.3f}"
            print(
                f"{shape_name:20s} threads={threads}: "
                f"minillada {row['tok_per_s_minillada']:6.0f} tok/s, "
                f"nanoGPT {row['tok_per_s_nanogpt']:6.0f} tok/s, ratio {row['ratio']:.3f} "
                f"(per repeat {spread}); same plain AdamW: ratio {row['ratio_plain_adamw']:.3f}; "
                f"readable RoPE {row['tok_per_s_minillada_readable_rope']:6.0f} tok/s",
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
