"""RL on iLLaDA-8B's shape with LoRA on one GPU (issue 25): peak memory and seconds of a rollout
and of one policy update, and whether the whole step fits a 24, 40 or 80 GB card.

    PYTHONPATH=. timeout 500 python bench/gpu_rl_lora.py --out bench/gpu_rl_lora.json   # one GPU
    python bench/gpu_rl_lora.py --dry-run --out /tmp/rl_dry.json    # the script, tiny, on the CPU

A random bf16 model of iLLaDA-8B's shape (random weights give the real model's time and memory;
its RoPE theta and norm epsilon are stand-ins, as in bench/gpu_illada.py) with LoRA rank 16 on
every projection of every block (q, k, v, out, gate, up, down), adapters in float32, gradient
checkpointing on. What lesson 9's trainer does per rollout, at the sizes of lesson 6's tasks:

* **rollout**: 64 completions (8 prompts x G = 8) of 64 tokens after 64-token prompts, the fixed
  canvas with blocks of 32 and 64 steps (64 forward passes over 64 x 128 positions), no gradients;
* **old and reference estimates**: d1's one-step log-probabilities twice (adapters on, then off),
  no gradients;
* **update**: the one-step estimate with gradients through the adapters, d1's clipped loss with
  the k3 KL, backward, clip, AdamW on the adapters.

Each is timed ``--repeats`` times after a warm-up (median and range); the peak memory is
``torch.cuda.max_memory_allocated`` over the whole step. ``--dry-run`` runs every part at a tiny
shape in float32 on the CPU: it tests the script, not the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from minillada.diffusion.policy import draw_one_step, one_step_logprobs
from minillada.models.llada import LLaDAModel, preset
from minillada.models.lora import AdaptersOff, add_lora, lora_parameters
from minillada.models.sizing import count_parameters
from minillada.runtime import environment_report
from minillada.sampling.generate import generate
from minillada.training.policy_gradient import clipped_policy_loss, group_advantages

STAND_INS = {"rope_theta": 500_000.0, "rms_norm_eps": 1e-5, "mask_token_id": 5}  # timing only
CARDS_GB = (24, 40, 80)


def shapes(dry_run: bool) -> dict:
    if dry_run:
        small = dict(d_model=64, n_layers=2, n_heads=8, n_kv_heads=2, mlp_hidden_size=160,
                     vocab_size=512, embedding_size=512, max_sequence_length=256)  # fmt: skip
        return {"config": preset("illada_8b", **small, **STAND_INS), "prompts": 2, "group": 2,
                "prompt_len": 8, "gen": 16, "block": 8, "steps": 16, "rank": 4}  # fmt: skip
    return {"config": preset("illada_8b", **STAND_INS), "prompts": 8, "group": 8,
            "prompt_len": 64, "gen": 64, "block": 32, "steps": 64, "rank": 16}  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> dict:
    fn()  # warm-up (kernels, allocator)
    values = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        values.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values),
            "all_s": values}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and not args.dry_run
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    s = shapes(args.dry_run)
    config = s["config"]
    model = LLaDAModel(config, device="meta", dtype=dtype)
    model.to_empty(device=device)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    add_lora(model, rank=s["rank"], alpha=2 * s["rank"])
    for a in lora_parameters(model):  # float32 adapters beside bf16 weights, as d1 trains them
        a.data = a.data.float()
    model.gradient_checkpointing = True
    reference = AdaptersOff(model)
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-5)
    sync(device)
    weights_gb = torch.cuda.memory_allocated(device) / 1e9 if cuda else 0.0
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    B, P, C = s["prompts"] * s["group"], s["prompt_len"], s["gen"]
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(10, config.vocab_size, (B, P), generator=g).to(device)
    keep = torch.ones(B, P, dtype=torch.bool, device=device)
    state: dict = {}

    def rollout() -> None:
        with torch.no_grad():
            canvas = generate(model, prompt, C, s["block"], s["steps"], config.mask_token_id,
                              temperature=1.0, generator=g)  # fmt: skip
        state["completion"] = canvas[:, P:]

    def old_and_reference() -> None:
        draw = draw_one_step(keep, 0.15, g)
        with torch.no_grad():
            state["old"] = one_step_logprobs(model, prompt, state["completion"],
                                             config.mask_token_id, draw)  # fmt: skip
            state["ref"] = one_step_logprobs(reference, prompt, state["completion"],
                                             config.mask_token_id, draw)  # fmt: skip
        state["draw"] = draw

    rewards = torch.rand(B, generator=g).round()
    advantages = group_advantages(rewards, s["group"]).values.to(device)

    def update() -> None:
        optimizer.zero_grad(set_to_none=True)
        logp = one_step_logprobs(model, prompt, state["completion"], config.mask_token_id,
                                 state["draw"])  # fmt: skip
        loss, _ = clipped_policy_loss(logp, state["old"], advantages, None, 0.5, state["ref"],
                                      0.04)  # fmt: skip
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lora_parameters(model), 0.2)
        optimizer.step()

    results = {
        "device": environment_report()["cuda"] if cuda else "cpu (dry run)",
        "config": {
            k: getattr(config, k)
            for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "vocab_size")
        },  # fmt: skip
        "parameters": count_parameters(config).total,
        "lora_rank": s["rank"],
        "lora_parameters": sum(p.numel() for p in lora_parameters(model)),
        "completions": B,
        "prompt_tokens": P,
        "completion_tokens": C,
        "rollout_forward_passes": s["steps"],
        "weights_gb": round(weights_gb, 2),
        "stand_ins": STAND_INS,
    }
    model.eval()  # LLaDA has no dropout; eval only marks that rollouts are inference
    results["rollout"] = timed(rollout, device, args.repeats)
    results["old_and_reference"] = timed(old_and_reference, device, args.repeats)
    model.train()
    results["update"] = timed(update, device, args.repeats)
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) / 1e9
        results["peak_gb"] = round(peak, 2)
        results["fits_gb"] = {str(c): peak < 0.95 * c for c in CARDS_GB}  # 5% for the context
    step = (results["rollout"]["median_s"] + results["old_and_reference"]["median_s"]
            + 2 * results["update"]["median_s"])  # fmt: skip
    results["seconds_per_rl_step_mu2"] = round(step, 3)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
