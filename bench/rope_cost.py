"""What RoPE costs in lesson 1's training step (the gap to nanoGPT in bench/README.md).

    python bench/rope_cost.py --out bench/rope_cost.json

Times one training step (AdamW, next-token cross-entropy so that only the position handling
differs) of lesson 1's TinyTransformer at the lesson-1 shape (batch 32, context 128), one thread,
with queries and keys rotated as shipped (fast RoPE: one complex multiply on reordered features),
rotated by rotate-half written out (``fast_rope=False``), not rotated at all (identity: what the
rest of the step costs), scaled by the cosine table only (one element-wise op), and with learned
absolute positions instead. Median of interleaved repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import minillada.models.tiny_transformer as tiny
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.runtime import environment_report

ROTATIONS = {  # swapped in for the rotate-half path (fast_rope=False)
    "rotate-half rope": tiny.apply_rope,
    "identity": lambda x, cos, sin: x,
    "one multiply": lambda x, cos, sin: x * cos,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 65, (32, 129), generator=g) for _ in range(20)]

    def make_step(model, rotation):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
        count = [0]

        def step():
            tiny.apply_rope = rotation
            b = batches[count[0] % len(batches)]
            count[0] += 1
            logits = model(b[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), b[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        return step

    torch.manual_seed(0)
    shipped = TinyTransformer(TinyTransformerConfig())
    steps = {"fast rope (shipped)": make_step(shipped, ROTATIONS["rotate-half rope"])}  # not called
    for name, rotation in ROTATIONS.items():
        torch.manual_seed(0)
        steps[name] = make_step(TinyTransformer(TinyTransformerConfig(fast_rope=False)), rotation)
    torch.manual_seed(0)
    learned = TinyTransformer(TinyTransformerConfig(positions="learned"))
    steps["learned positions"] = make_step(learned, ROTATIONS["rotate-half rope"])  # not called
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):  # interleaved
        for name, step in steps.items():
            for _ in range(3):
                step()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps * 1e3)
    tiny.apply_rope = ROTATIONS["rotate-half rope"]
    result = {name: round(statistics.median(t), 1) for name, t in times.items()}
    print("ms per training step:", result)
    if args.out:
        record = {"machine": environment_report(), "ms_per_step": result, "raw_ms": times}
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
