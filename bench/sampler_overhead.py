"""How much of LLaDA-style sampling time is the sampler's own work (not the model's forward pass)?

    python bench/sampler_overhead.py            # writes nothing; prints a Markdown table
    python bench/sampler_overhead.py --threads 2 --repeats 5

Setup: lesson 1's architecture (TinyTransformer, 4 layers, width 128, vocabulary 66 with the mask id
65) but with block_size 256, because lesson 1's trained model has a 128-token context. The weights
are random: timing does not depend on them. gen_length 256, steps 256 (one token per step), batch 1,
CPU, no prompt. The model is wrapped in a timer; "sampler" = total time minus time inside forward.
Target: sampler < 10% of the sampling time. Result recorded in bench/sampler_overhead.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.runtime import environment_report
from minillada.sampling.generate import generate


class TimedModel(torch.nn.Module):
    """Forwards to ``inner`` and accumulates the wall time spent inside its forward pass."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.seconds = 0.0
        self.calls = 0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.inner(ids)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def run_once(
    model: TimedModel, gen_length: int, block_length: int, steps: int, **kw
) -> tuple[float, float]:
    model.seconds, model.calls = 0.0, 0
    t0 = time.perf_counter()
    generate(model, torch.empty(1, 0, dtype=torch.long), gen_length, block_length, steps, 65, **kw)
    total = time.perf_counter() - t0
    assert model.calls == steps
    return total, model.seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = TinyTransformerConfig(vocab_size=66, block_size=256)
    model = TimedModel(TinyTransformer(cfg).eval())
    settings = [
        ("block 256, T=0, low_confidence", 256, dict()),
        ("block 32, T=0, low_confidence", 32, dict()),
        (
            "block 256, T=1, low_confidence",
            256,
            dict(temperature=1.0, generator=torch.Generator().manual_seed(0)),
        ),
        ("block 256, T=0, margin", 256, dict(remasking="margin")),
    ]
    run_once(model, 256, 256, 256)  # warm-up
    rows = []
    for name, block, kw in settings:
        totals, fwds = [], []
        for _ in range(args.repeats):
            total, fwd = run_once(model, 256, block, 256, **kw)
            totals.append(total)
            fwds.append(fwd)
        shares = [(t - f) / t for t, f in zip(totals, fwds, strict=True)]
        rows.append(
            (name, statistics.median(totals), statistics.median(fwds), statistics.median(shares))
        )
    print("| setting (gen 256, steps 256, batch 1) | total s | forward s | sampler share |")
    print("|---|---|---|---|")
    for name, total, fwd, share in rows:
        print(f"| {name} | {total:.3f} | {fwd:.3f} | {100 * share:.1f}% |")
    print()
    print("```json")
    print(json.dumps(environment_report(), indent=1))
    print("```")


if __name__ == "__main__":
    main()
