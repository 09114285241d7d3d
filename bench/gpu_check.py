"""The course's GPU paths, checked and timed in one run on one GPU (see bench/gpu_check.md).

    python bench/gpu_check.py --out bench/gpu_check.json              # on a CUDA machine
    python bench/gpu_check.py --out /tmp/gpu_dry.json --scale tiny    # dry run of every path, CPU

What it does, in order (each part adds its numbers to the JSON as soon as it finishes):

1. char:    lesson 1's shipped model on the CPU and on the GPU: logits agree, and LLaDA's sampler
            at temperature 0 gives the same text on both.
2. train:   lesson 4's LLaDAModel trained by `minillada.cli.train_llada` on the GPU in fp32 and with
            --bf16 (autocast), same seed: both losses, and seconds per iteration.
3. 8b:      the released 8B architecture (config from the released config.json) with random bf16
            weights: parameter count, forward latency, fast (SDPA) vs spelled-out attention, and
            `generate` throughput in LLaDA's GSM8K settings (gen 256, block 32, steps 256 and 64).
4. load:    those weights written as a snapshot in the released layout (6 bf16 shards + index +
            config.json), their names and shapes checked against the released index, loaded back
            onto the GPU with `load_hf_checkpoint`, and the logits compared bit for bit.

Random weights make the timings those of the real model (the arithmetic does not depend on the
values) but the text meaningless; no machine here can download the released weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from minillada.checkpoints.hf import load_hf_checkpoint, read_hf_config, save_hf_checkpoint
from minillada.models.llada import LLaDAModel, preset
from minillada.runtime import environment_report, repo_path
from minillada.sampling.generate import generate

RESULTS: dict = {}


def record(out: Path, key: str, value) -> None:
    RESULTS[key] = value
    out.write_text(json.dumps(RESULTS, indent=1) + "\n")
    print(f"[{key}] {json.dumps(value)}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int = 1, warmup: bool = True) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls (after one warm-up call), and the last result."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], result


# --------------------------------------------------------------------------------------------------
# 1. lesson 1's model on both devices
# --------------------------------------------------------------------------------------------------


def check_char(device: torch.device) -> dict:
    from minillada.checkpoints.shipped import load_char_shakespeare
    from minillada.data.char import load_char_corpus

    model_cpu, tok = load_char_shakespeare("cpu")
    model_dev, _ = load_char_shakespeare(device)
    _, _, val_ids = load_char_corpus()
    windows = val_ids[: 8 * 128].view(8, 128)
    g = torch.Generator().manual_seed(0)
    masked = torch.where(torch.rand(windows.shape, generator=g) < 0.5, tok.mask_id, windows)
    with torch.no_grad():
        logits_cpu = model_cpu(masked)
        logits_dev = model_dev(masked.to(device)).cpu()
    prompt = val_ids[:32]
    kwargs = dict(gen_length=96, block_length=32, steps=96, mask_id=tok.mask_id, temperature=0.0)
    text_cpu = generate(model_cpu, prompt, **kwargs)[0, 32:]
    text_dev = generate(model_dev, prompt, **kwargs)[0, 32:].cpu()
    return {
        "max_abs_logit_diff": float((logits_cpu - logits_dev).abs().max()),
        "argmax_agreement": float((logits_cpu.argmax(-1) == logits_dev.argmax(-1)).float().mean()),
        "generate_tokens_equal": int((text_cpu == text_dev).sum()),
        "generate_tokens": int(text_cpu.numel()),
        "sample_gpu": tok.decode(text_dev.tolist()),
    }


# --------------------------------------------------------------------------------------------------
# 2. lesson 4's training loop on the GPU, fp32 and bf16 autocast
# --------------------------------------------------------------------------------------------------


def check_train(device: torch.device, iters: int) -> dict:
    from minillada.cli.train_llada import main as train_llada_main

    tokenizer = repo_path("data", "checkpoints", "subword_shakespeare")
    out: dict = {}
    for name, extra in [("fp32", []), ("bf16", ["--bf16"])]:
        folder = Path(tempfile.mkdtemp(prefix=f"gpu_train_{name}_"))
        t0 = time.perf_counter()
        metrics = train_llada_main(
            ["--out", str(folder), "--tokenizer", str(tokenizer), "--iters", str(iters),
             "--eval-interval", str(iters), "--save-every", str(iters), "--final-samples", "4",
             "--batch-size", "64", *extra]
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        state = json.loads((folder / "trainer_state.json").read_text())
        out[name] = {
            "seconds_total": round(seconds, 2),
            "seconds_training": round(state["history"]["seconds"][-1], 2),
            "final_train_loss": state["history"]["loss"][-1],
            "val_bits_per_char": metrics.get("val_bits_per_char"),
        }
        shutil.rmtree(folder)
    return out


# --------------------------------------------------------------------------------------------------
# 3-4. the 8B architecture: speed, memory, and the released checkpoint layout
# --------------------------------------------------------------------------------------------------


def build_random(config, device: torch.device, dtype: torch.dtype) -> LLaDAModel:
    """Random weights made on the device itself (no 32 GB fp32 copy on the host)."""
    model = LLaDAModel(config, device="meta", dtype=dtype)
    model.to_empty(device=device)
    model.init_weights(torch.Generator(device).manual_seed(0))
    return model.eval()


def random_prompt(length: int, vocab: int, mask_id: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, min(vocab, 100_000), (length,), generator=g)
    return torch.where(ids == mask_id, 0, ids)


def check_8b(model: LLaDAModel, device: torch.device, scale: str) -> dict:
    cfg = model.config
    res: dict = {"parameters": model.num_parameters()}
    lengths = [512, 1024, 2048] if scale == "8b" else [64, 128]
    forward_ms = {}
    for L in lengths:
        ids = random_prompt(L, cfg.vocab_size, cfg.mask_token_id, L)[None].to(device)
        with torch.no_grad():
            sec, _ = timed(lambda ids=ids: model(ids), device, repeats=5)
        forward_ms[L] = round(sec * 1e3, 2)
    res["forward_ms_batch1"] = forward_ms

    L = lengths[1]
    ids = random_prompt(L, cfg.vocab_size, cfg.mask_token_id, 7)[None].to(device)
    with torch.no_grad():
        cfg.fast_attention = False
        sec_readable, readable = timed(lambda: model(ids), device, repeats=3)
        cfg.fast_attention = True
        sec_fast, fast = timed(lambda: model(ids), device, repeats=3)
    diff = (readable.float() - fast.float()).abs()
    res["attention"] = {
        "length": L,
        "readable_ms": round(sec_readable * 1e3, 2),
        "sdpa_ms": round(sec_fast * 1e3, 2),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "logit_std": float(fast.float().std()),
    }
    del readable, fast

    gen = 256 if scale == "8b" else 32
    block = 32 if scale == "8b" else 8
    runs = []
    settings = [(128, 1, gen), (128, 1, gen // 4), (900, 1, gen), (128, 8, gen)]
    for i, (prompt_len, batch, steps) in enumerate(settings):
        if scale != "8b":
            prompt_len = min(prompt_len, 32)
        prompt = torch.stack(
            [random_prompt(prompt_len, cfg.vocab_size, cfg.mask_token_id, 100 + b)
             for b in range(batch)]
        )  # fmt: skip
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sec, out = timed(
            lambda prompt=prompt, steps=steps: generate(
                model, prompt, gen_length=gen, block_length=block, steps=steps,
                mask_id=cfg.mask_token_id, temperature=0.0,
            ),
            device,
            warmup=i == 0,  # the first run warms the kernels up for all of them
        )  # fmt: skip
        assert not (out[:, prompt_len:] == cfg.mask_token_id).any(), "masks left after generate"
        runs.append(
            {
                "prompt_tokens": prompt_len,
                "batch": batch,
                "gen_length": gen,
                "block_length": block,
                "steps": steps,
                "seconds": round(sec, 3),
                "output_tokens_per_s": round(batch * gen / sec, 2),
                "ms_per_step": round(sec / steps * 1e3, 2),
                "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                if device.type == "cuda"
                else None,
            }
        )
    res["generate"] = runs
    return res


def check_load(model: LLaDAModel, device: torch.device, workdir: Path, reference: Path) -> dict:
    folder = workdir / "llada_random_snapshot"
    t0 = time.perf_counter()
    save_hf_checkpoint(model, folder, num_shards=6, dtype=torch.bfloat16)
    save_s = time.perf_counter() - t0
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    res: dict = {
        "save_seconds": round(save_s, 1),
        "bytes": index["metadata"]["total_size"],
        "shards": sorted(set(index["weight_map"].values())),
    }
    released_index = reference / "model.safetensors.index.json"
    if released_index.is_file():
        released = json.loads(released_index.read_text())
        res["same_keys_as_released_index"] = set(released["weight_map"]) == set(index["weight_map"])
        res["same_total_size_as_released_index"] = (
            released["metadata"]["total_size"] == index["metadata"]["total_size"]
        )
    sync(device)
    t0 = time.perf_counter()
    loaded = load_hf_checkpoint(folder, device=device, checkpoint_dtype=torch.bfloat16)
    sync(device)
    load_s = time.perf_counter() - t0
    res["load_seconds"] = round(load_s, 2)
    res["load_gib_per_s"] = round(res["bytes"] / 2**30 / load_s, 2)
    ids = random_prompt(64, model.config.vocab_size, model.config.mask_token_id, 3)[None].to(device)
    with torch.no_grad():
        res["logits_bit_identical"] = bool(torch.equal(model(ids), loaded(ids)))
    del loaded
    shutil.rmtree(folder)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file for the results")
    ap.add_argument("--scale", choices=["8b", "tiny"], default="8b")
    ap.add_argument("--reference", default=None, help="folder with the released config/index")
    ap.add_argument("--workdir", default=None, help="where the snapshot is written (deleted)")
    ap.add_argument("--train-iters", type=int, default=300)
    ap.add_argument("--skip", nargs="*", default=[], choices=["char", "train", "8b", "load"])
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    record(out, "environment", environment_report())
    record(out, "command", "python bench/gpu_check.py " + " ".join(os.sys.argv[1:]))

    if "char" not in args.skip:
        record(out, "char", check_char(device))
    if "train" not in args.skip:
        record(out, "train", check_train(device, args.train_iters))
    if "8b" in args.skip and "load" in args.skip:
        return
    reference = Path(args.reference) if args.reference else None
    if args.scale == "8b":
        if reference is None or not (reference / "config.json").is_file():
            raise SystemExit("--reference must name a folder with the released config.json")
        config = read_hf_config(reference)
    else:
        config = preset("tiny", mask_token_id=500, eos_token_id=501, pad_token_id=502)
    t0 = time.perf_counter()
    model = build_random(config, device, torch.bfloat16)
    sync(device)
    record(out, "build_seconds", round(time.perf_counter() - t0, 2))
    if "8b" not in args.skip:
        record(
            out, "8b" if args.scale == "8b" else "tiny_llada", check_8b(model, device, args.scale)
        )
    if "load" not in args.skip:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check_"))
        record(out, "load", check_load(model, device, workdir, reference or Path("/nonexistent")))


if __name__ == "__main__":
    main()
