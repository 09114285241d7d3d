"""Training throughput on the CPU: minillada's LLaDAModel against a plain PyTorch implementation of
the same architecture, written compactly below (nn.Linear, F.scaled_dot_product_attention).

Both models get the same weights (the plain model is checked to give the same logits first), the
same Tiny Shakespeare subword batches, the same LLaDA loss, AdamW settings, gradient clipping and
thread count, in fp32. Repeats are interleaved so background load hits both equally. Tokens per
second = batch * context * iters / seconds (median over repeats).

    python bench/llada_train_speed.py --out bench/llada_train_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minillada.models.llada import LLaDAConfig, LLaDAModel, preset  # noqa: E402
from minillada.runtime import environment_report  # noqa: E402
from minillada.training.llada import chunk_loss, draw_rows  # noqa: E402

# ------------------------------------------------------------------------------------------------
# The plain implementation: what one would write from the paper in ~50 lines.
# ------------------------------------------------------------------------------------------------


class PlainBlock(nn.Module):
    def __init__(self, c: LLaDAConfig):
        super().__init__()
        D, F_ = c.d_model, c.hidden_size
        self.h, self.eps = c.n_heads, c.rms_norm_eps
        self.n1, self.n2 = nn.Parameter(torch.ones(D)), nn.Parameter(torch.ones(D))
        self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=False) for _ in range(4))
        self.gate, self.up = nn.Linear(D, F_, bias=False), nn.Linear(D, F_, bias=False)
        self.down = nn.Linear(F_, D, bias=False)

    def norm(self, x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def rope(self, x, cos, sin):
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    def forward(self, x, cos, sin):
        B, L, D = x.shape
        h = self.norm(x, self.n1)
        q, k, v = (p(h).view(B, L, self.h, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(self.rope(q, cos, sin), self.rope(k, cos, sin), v)
        x = x + self.o(a.transpose(1, 2).reshape(B, L, D))
        h = self.norm(x, self.n2)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class PlainLLaDA(nn.Module):
    def __init__(self, c: LLaDAConfig):
        super().__init__()
        self.emb = nn.Embedding(c.vocab_rows, c.d_model)
        self.blocks = nn.ModuleList(PlainBlock(c) for _ in range(c.n_layers))
        self.norm_w = nn.Parameter(torch.ones(c.d_model))
        self.head = nn.Linear(c.d_model, c.vocab_rows, bias=False)
        Dh = c.head_dim
        inv = 1.0 / c.rope_theta ** (torch.arange(0, Dh, 2).float() / Dh)
        ang = torch.outer(torch.arange(c.max_sequence_length).float(), inv).repeat(1, 2)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, ids):
        L = ids.shape[1]
        x = self.emb(ids)
        for b in self.blocks:
            x = b(x, self.cos[:L], self.sin[:L])
        return self.head(self.blocks[0].norm(x, self.norm_w))

    def load_from(self, m: LLaDAModel) -> PlainLLaDA:
        t = m.transformer
        with torch.no_grad():
            self.emb.weight.copy_(t.wte.weight)
            self.norm_w.copy_(t.ln_f.weight)
            self.head.weight.copy_(t.ff_out.weight)
            for pb, mb in zip(self.blocks, t.blocks, strict=True):
                for a, b in [("n1", "attn_norm"), ("n2", "ff_norm")]:
                    getattr(pb, a).copy_(getattr(mb, b).weight)
                for a, b in [
                    ("q", "q_proj"),
                    ("k", "k_proj"),
                    ("v", "v_proj"),
                    ("o", "attn_out"),
                    ("gate", "ff_proj"),
                    ("up", "up_proj"),
                    ("down", "ff_out"),
                ]:
                    getattr(pb, a).weight.copy_(getattr(mb, b).weight)
        return self


# ------------------------------------------------------------------------------------------------


def make_step(model, batches, mask_id):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    state = {"i": 0}

    def step():
        x0, t, u = batches[state["i"] % len(batches)]
        state["i"] += 1
        loss = chunk_loss(model, x0, t, u, mask_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def timed(step, iters: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    # lesson 4's shape, a little wider: 4 layers, d 192, 6 heads, SwiGLU 512, vocab 2048, L 128
    cfg = preset(
        "small",
        d_model=192,
        n_heads=6,
        n_kv_heads=6,
        mlp_hidden_size=512,
        vocab_size=2048,
        embedding_size=2048,
        max_sequence_length=128,
    )
    mask_id, L = 2047, cfg.max_sequence_length
    data = torch.randint(0, mask_id, (100_000,), generator=torch.Generator().manual_seed(0))
    batches = [draw_rows(data, range(args.batch), args.batch, L, 0, s) for s in range(8)]
    results = {
        "machine": environment_report(),
        "config": {
            "d_model": cfg.d_model,
            "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads,
            "mlp_hidden_size": cfg.hidden_size,
            "vocab": cfg.vocab_rows,
            "context": L,
            "batch": args.batch,
            "iters_per_repeat": args.iters,
            "repeats": args.repeats,
        },
        "runs": [],
    }

    for threads in args.threads:
        torch.set_num_threads(threads)
        ours = LLaDAModel(cfg, generator=torch.Generator().manual_seed(0))
        plain = PlainLLaDA(cfg).load_from(ours)
        with torch.no_grad():
            ids = batches[0][0]
            err = (ours(ids) - plain(ids)).abs().max().item()
        assert err < 1e-4, f"the plain model disagrees with LLaDAModel (max |diff| {err:.2e})"
        s_ours, s_plain = make_step(ours, batches, mask_id), make_step(plain, batches, mask_id)
        t_ours, t_plain = [], []
        for r in range(args.repeats):  # interleaved, alternating who goes first
            pair = [(s_ours, t_ours), (s_plain, t_plain)]
            for step, times in pair if r % 2 == 0 else pair[::-1]:
                times.append(timed(step, args.iters))
        tokens = args.iters * args.batch * L
        row = {
            "threads": threads,
            "params": ours.num_parameters(),
            "max_abs_logit_diff": err,
            "tok_per_s_minillada": tokens / statistics.median(t_ours),
            "tok_per_s_plain": tokens / statistics.median(t_plain),
            "seconds_minillada": t_ours,
            "seconds_plain": t_plain,
        }
        row["ratio"] = row["tok_per_s_minillada"] / row["tok_per_s_plain"]
        results["runs"].append(row)
        print(
            f"threads={threads}: minillada {row['tok_per_s_minillada']:7.0f} tok/s, "
            f"plain {row['tok_per_s_plain']:7.0f} tok/s, ratio {row['ratio']:.3f}",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
