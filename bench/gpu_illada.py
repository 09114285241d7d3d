"""iLLaDA-8B's shape beside LLaDA-8B's on one GPU: build time, forward latency, peak memory.

    python bench/gpu_illada.py --out bench/gpu_illada.json            # on a CUDA machine
    python bench/gpu_illada.py --out /tmp/illada_dry.json --dry-run   # tiny shapes, on the CPU

For each model: the config from its preset (iLLaDA's RoPE theta and norm epsilon are not published:
this benchmark sets stand-ins, 500,000 and 1e-5, since timing does not depend on them; a real
snapshot's config.json supplies the true values), the model built on the meta device (seconds),
random bf16 weights materialised on the GPU, then one forward pass at batch 1 and L = 512, 1,024
and 4,096 tokens: median latency of 5 (after a warm-up) and the peak memory the pass allocated
(torch.cuda.max_memory_allocated above the weights). Random weights make the timings those of the
real models; the logits mean nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from minillada.models.llada import LLaDAModel, preset
from minillada.models.sizing import count_parameters, kv_bytes_per_token
from minillada.runtime import environment_report

STAND_INS = {"rope_theta": 500_000.0, "rms_norm_eps": 1e-5}  # timing only; never a claim


def configs(dry_run: bool) -> dict:
    small = dict(d_model=64, n_layers=2, n_heads=8, mlp_hidden_size=160, vocab_size=512,
                 embedding_size=512, max_sequence_length=256)  # fmt: skip
    if dry_run:
        return {
            "llada_8b": preset("llada_8b", **small, n_kv_heads=8),
            "illada_8b": preset("illada_8b", **small, n_kv_heads=2, **STAND_INS),
        }
    return {"llada_8b": preset("llada_8b"), "illada_8b": preset("illada_8b", **STAND_INS)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, config, device: torch.device, lengths: list[int]) -> dict:
    t0 = time.perf_counter()
    model = LLaDAModel(config, device="meta", dtype=torch.bfloat16)
    build = time.perf_counter() - t0
    model.to_empty(device=device)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    model.eval()
    sync(device)
    weights = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    out = {
        "parameters": count_parameters(config).total,
        "kv_bytes_per_token": kv_bytes_per_token(config),
        "meta_build_seconds": round(build, 4),
        "weight_gib": round(weights / 2**30, 2),
        "forward": {},
    }
    g = torch.Generator().manual_seed(0)
    for L in lengths:
        ids = torch.randint(0, config.vocab_size, (1, L), generator=g).to(device)
        with torch.no_grad():
            model(ids)  # warm-up
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            for _ in range(5):
                sync(device)
                t0 = time.perf_counter()
                model(ids)
                sync(device)
                times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated(device) - weights if device.type == "cuda" else 0
        out["forward"][L] = {
            "ms": round(1000 * statistics.median(times), 2),
            "peak_gib_above_weights": round(peak / 2**30, 2),
        }
        print(f"{name} L={L}: {out['forward'][L]}", flush=True)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    lengths = [32, 64] if args.dry_run else [512, 1024, 4096]
    results = {"device": environment_report()["cuda"], "stand_ins": STAND_INS, "models": {}}
    for name, config in configs(args.dry_run).items():
        results["models"][name] = measure(name, config, device, lengths)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
