"""iLLaDA-8B's shape beside LLaDA-8B's on one GPU: build time, forward latency, generation, scoring.

    python bench/gpu_illada.py --out bench/gpu_illada.json            # on a CUDA machine
    python bench/gpu_illada.py --out /tmp/illada_dry.json --dry-run   # tiny shapes, on the CPU

For each model: the config from its preset (iLLaDA's RoPE theta and norm epsilon are not published:
this benchmark sets stand-ins, 500,000 and 1e-5, since timing does not depend on them; a real
snapshot's config.json supplies the true values), the model built on the meta device (seconds),
random bf16 weights materialised on the GPU, then one forward pass at batch 1 and L = 512, 1,024
and 4,096 tokens: median latency of 5 (after a warm-up) and the peak memory the pass allocated
(torch.cuda.max_memory_allocated above the weights). Random weights make the timings those of the
real models; the logits mean nothing.

Then, at batch 1 after a 128-token prompt: 256 generated tokens with iLLaDA's variable-length rule
(blocks of 32, 32 steps per block, no stop: random weights never write EOS) against LLaDA's fixed
canvas (gen 256, blocks of 32, 256 steps), and the confidence score of a 20-token answer
(20 forward passes). Each forward's achieved bf16 TFLOP/s (2 x parameters x tokens plus attention)
and weight-reading bandwidth (bf16 weights / latency) are set against the device's datasheet
peaks, so that "how far from the limits" is read off the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path

import torch

from minillada.diffusion.confidence import confidence_score
from minillada.models.kv_cache import KVCache
from minillada.models.llada import LLaDAModel, preset
from minillada.models.sizing import count_parameters, kv_bytes_per_token
from minillada.runtime import environment_report
from minillada.sampling.generate import generate
from minillada.sampling.variable_length import var_generate

STAND_INS = {"rope_theta": 500_000.0, "rms_norm_eps": 1e-5, "mask_token_id": 5}  # timing only
# dense bf16 TFLOP/s and HBM TB/s from NVIDIA's datasheets (SXM parts)
PEAKS = {"H200": (989.0, 4.8), "H100": (989.0, 3.35), "A100": (312.0, 2.0), "L4": (121.0, 0.3)}


def configs(dry_run: bool) -> dict:
    small = dict(d_model=64, n_layers=2, n_heads=8, mlp_hidden_size=160, vocab_size=512,
                 embedding_size=512, max_sequence_length=256)  # fmt: skip
    if dry_run:
        return {
            "llada_8b": preset("llada_8b", **small, n_kv_heads=8, mask_token_id=5),
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
        flops = 2 * out["parameters"] * L + 4 * config.n_layers * L * L * config.d_model
        seconds = statistics.median(times)
        out["forward"][L]["tflops"] = round(flops / seconds / 1e12, 1)
        out["forward"][L]["weight_tb_per_s"] = round(2 * out["parameters"] / seconds / 1e12, 2)
        print(f"{name} L={L}: {out['forward'][L]}", flush=True)
    prompt = torch.randint(0, config.vocab_size, (1, 128), generator=g).to(device)
    mask = config.mask_token_id
    gen = 32 if device.type == "cpu" else 256
    for label, run in [
        ("variable_length", partial(var_generate, model, prompt, gen, 32, 32, mask, stop_ids=[])),
        ("fixed_canvas", partial(generate, model, prompt, gen, 32, gen, mask)),
        ("confidence_20", partial(confidence_score, model, prompt[0], prompt[0, :20], mask)),
    ]:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t0 = time.perf_counter()
        run()
        sync(device)
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
        out[label] = {"seconds": round(seconds, 3), "peak_gib": round(peak / 2**30, 2)}
        if label != "confidence_20":
            out[label]["tokens_per_s"] = round(gen / seconds, 1)
        print(f"{name} {label}: {out[label]}", flush=True)
    out["cache"] = cached_steps(model, prompt, gen, device)
    print(f"{name} cache: {out['cache']}", flush=True)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def timed(fn, device: torch.device, repeats: int = 5) -> float:
    """Median seconds of ``fn()`` after a warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def cached_steps(model, prompt: torch.Tensor, gen: int, device: torch.device) -> dict:
    """Lesson 8: milliseconds of one sampler step on a canvas of prompt + ``gen`` masks with full
    recomputation, a prefix-cache window (the current block, at the middle of the canvas, to the
    end) and a dual-cache window (the block alone), the cache's bytes, and the tokens/s these imply
    at the forward passes per token lesson 8 measured on the CPU (bench/fast_sampling.json)."""
    P, block = prompt.shape[1], 32
    canvas = torch.cat([prompt, torch.full((1, gen), model.config.mask_token_id, device=device)], 1)
    cache = KVCache()
    model(canvas, cache=cache.record())
    start = P + (gen // block // 2) * block
    full = timed(lambda: model(canvas), device)
    prefix = timed(lambda: model(canvas[:, start:], cache=cache, start=start), device)
    dual = timed(lambda: model(canvas[:, start : start + block], cache=cache, start=start), device)
    out = {
        "canvas": canvas.shape[1],
        "full_ms": round(1000 * full, 2),
        "prefix_window_ms": round(1000 * prefix, 2),
        "dual_window_ms": round(1000 * dual, 2),
        "cache_mib": round(cache.nbytes / 2**20, 1),
    }
    recorded = Path(__file__).with_name("fast_sampling.json")
    if recorded.is_file():
        runs = json.loads(recorded.read_text())["runs"]
        fast = next(r for r in runs if r["sampler"] == "fixed" and r["threshold"] == 0.9
                    and r["cache"] == "dual")  # fmt: skip
        passes = fast["mean_forward_passes"] / 32 * gen  # passes per token, at this canvas
        blocks = gen // block
        seconds = blocks * full + max(0.0, passes - blocks) * dual  # one refresh per block
        out["implied_fast_passes"] = round(passes, 1)
        out["implied_fast_tokens_per_s"] = round(gen / seconds, 1)
        out["exact_tokens_per_s_at_full_ms"] = round(gen / (gen * full), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    lengths = [32, 64] if args.dry_run else [512, 1024, 4096]
    device_name = environment_report()["cuda"]
    peaks = next((v for k, v in PEAKS.items() if k in device_name), None)
    results = {
        "device": device_name,
        "datasheet_peak_bf16_tflops_and_tb_per_s": peaks,
        "stand_ins": STAND_INS,
        "models": {},
    }
    for name, config in configs(args.dry_run).items():
        results["models"][name] = measure(name, config, device, lengths)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
