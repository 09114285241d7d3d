"""Many prompts per forward pass (issue 23): items/s of lesson 6's evaluation at batch 1, 8 and 32
on the CPU, and on a GPU the milliseconds per pass of iLLaDA-8B's shape at batch 1, 8 and 32 with
the projected minutes of GSM8K-Instruct (see bench/batched_eval.md for the recorded numbers).

    ATEN_CPU_CAPABILITY=avx2 python bench/batched_eval.py --out bench/batched_eval.json
    PYTHONPATH=. timeout 420 python bench/batched_eval.py --gpu --out /tmp/g.json     # one GPU
    python bench/batched_eval.py --gpu --dry-run --out /tmp/g.json    # the GPU script, tiny, CPU

CPU: lesson 6's shipped instruct model answers its 490 held-out instructions with iLLaDA's
variable length (budget 32, blocks of 8, temperature 0), exact (8 steps per block: one token per
pass) and approximate (threshold 0.9 with the dual cache), each at batch 1, 8 and 32
(``answer_instructions``: finished rows leave, waiting prompts join). Every setting runs
``--repeats`` times: items/s is the median with the range, beside the forward passes and the
positions they ran over (work measures that do not vary). The exact answers must be identical at
every batch size; the approximate sampler at batch 32 is compared with the exact one at batch 1
on the same items by McNemar's exact test.

GPU (``--gpu``): a random bf16 model of iLLaDA-8B's shape (the arithmetic does not depend on the
values). Milliseconds per pass (median of ``--repeats``, with the range) at batch 1, 8, 32 for a
full pass over 700 positions and for a 32-position window against 700 cached positions (the dual
cache's pass); then the projected minutes for GSM8K-Instruct's 1,319 problems at the paper's
settings (budget 2048, blocks of 32) for answers of 600 tokens: exact (32 passes per block, each
a full pass, timed at 700 positions) and approximate (per block one full pass that records the
cache, then window passes; the tokens revealed per window pass depend on the real model's
confidence, which random weights cannot give, so the projection is printed for 2, 4 and 8).
``--dry-run`` runs the GPU part at a tiny shape on the CPU in float32: it tests the script only.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from minillada.estimate import paired_comparison
from minillada.runtime import environment_report, processor_name

GSM8K_PROBLEMS = 1319
BATCHES = (1, 8, 32)


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "all": values}  # fmt: skip


def cpu(repeats: int, limit: int | None) -> dict:
    from minillada.checkpoints.shipped import load_instruct_shakespeare
    from minillada.data.downloads import load_text
    from minillada.data.instructions import make_instruction_data
    from minillada.evaluation.instructions import answer_instruction, answer_instructions

    model, tokenizer, _ = load_instruct_shakespeare()
    items = make_instruction_data(load_text(), 10_000, 100, seed=0).held_out[:limit]
    out = {"items": len(items), "budget": 32, "block_length": 8, "runs": []}
    # what batching can give: one forward pass at batch 1 and at batch 32, per row
    out["forward_ms"] = []
    with torch.no_grad():
        for positions in (16, 48, 64):
            row = {"positions": positions}
            for batch in (1, 32):
                ids = torch.randint(0, 2000, (batch, positions))
                timed = time_ms(lambda ids=ids: model(ids), 10 * repeats, lambda: None)
                row[f"batch_{batch}"] = timed
            row["less_per_row"] = 32 * row["batch_1"]["median"] / row["batch_32"]["median"]
            out["forward_ms"].append(row)
            print(json.dumps({"positions": positions, "less_per_row": row["less_per_row"]}))
    answers = {}
    for name, threshold, cache in (("exact", None, None), ("threshold 0.9 + dual", 0.9, "dual")):
        for batch in BATCHES:
            rates = []
            for _ in range(repeats):
                start = time.perf_counter()
                if batch == 1:
                    got = [
                        answer_instruction(model, tokenizer, e, "variable", 32, 8, threshold, cache)
                        for e in items
                    ]
                else:
                    got = answer_instructions(
                        model, tokenizer, items, "variable", 32, 8, threshold, cache, batch
                    )
                rates.append(len(items) / (time.perf_counter() - start))
            answers[name, batch] = got
            run = {
                "sampler": name,
                "batch": batch,
                "items_per_second": spread(rates),
                "correct": sum(a.correct for a in got),
                "forward_passes_per_item": sum(a.forward_passes for a in got) / len(got),
                "positions_per_item": sum(a.positions for a in got) / len(got),
            }
            out["runs"].append(run)
            print(json.dumps({k: v for k, v in run.items()}), flush=True)
    base = statistics.median(r["items_per_second"]["median"] for r in out["runs"][:1])
    for run in out["runs"]:
        run["speedup_over_exact_batch_1"] = run["items_per_second"]["median"] / base
    exact = [a.text for a in answers["exact", 1]]
    out["exact_identical_at_every_batch"] = all(
        [a.text for a in answers["exact", b]] == exact for b in BATCHES
    )
    fast = paired_comparison(
        [a.correct for a in answers["exact", 1]],
        [a.correct for a in answers["threshold 0.9 + dual", 32]],
    )
    out["paired"] = {"line": fast.line("exact, batch 1", "threshold 0.9 + dual, batch 32"),
                     "only_exact": fast.only_a, "only_fast": fast.only_b,
                     "p_two_sided": fast.p_two_sided, "p_fast_worse": fast.p_b_worse}  # fmt: skip
    print(out["paired"]["line"])
    return out


def time_ms(fn, repeats: int, sync) -> dict:
    fn()  # warm up (kernels chosen, memory allocated)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(1000 * (time.perf_counter() - start))
    return spread(times)


def projection(full_ms: float, window_ms: float, batch: int, answer: int = 600,
               block: int = 32, tokens_per_window_pass: float | None = None) -> float:  # fmt: skip
    """Minutes for GSM8K-Instruct's 1,319 problems at ``batch`` rows per pass, answers of
    ``answer`` tokens in blocks of ``block``: exact (``tokens_per_window_pass`` None: ``block``
    full passes per block) or approximate (one full pass per block, then window passes revealing
    ``tokens_per_window_pass`` tokens each; the full pass reveals at least one)."""
    blocks = math.ceil(answer / block)
    if tokens_per_window_pass is None:
        per_block = block * full_ms
    else:
        per_block = full_ms + math.ceil((block - 1) / tokens_per_window_pass) * window_ms
    return GSM8K_PROBLEMS / batch * blocks * per_block / 60_000


@torch.no_grad()
def gpu(repeats: int, dry_run: bool) -> dict:
    from minillada.models.kv_cache import KVCache
    from minillada.models.llada import LLaDAModel, preset

    if dry_run:
        device, dtype, positions, window = torch.device("cpu"), torch.float32, 70, 8
        config = preset("illada_1b", d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                        mlp_hidden_size=96, vocab_size=512, embedding_size=512, rope_theta=5e5,
                        rms_norm_eps=1e-5)  # fmt: skip
    else:
        device, dtype, positions, window = torch.device("cuda"), torch.bfloat16, 700, 32
        # iLLaDA-8B's published shape; theta and epsilon only change values, not the arithmetic
        config = preset("illada_8b", rope_theta=5e5, rms_norm_eps=1e-5)
    model = LLaDAModel(config, device=device, dtype=dtype).eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = {"shape": {"d_model": config.d_model, "n_layers": config.n_layers,
                     "heads": config.n_heads, "kv_heads": config.kv_heads,
                     "vocab": config.vocab_size}, "positions": positions, "window": window,
           "dtype": str(dtype), "passes": []}  # fmt: skip
    for batch in BATCHES:
        ids = torch.randint(0, config.vocab_size, (batch, positions), device=device)
        cache = KVCache()
        full = time_ms(lambda ids=ids: model(ids), repeats, sync)
        model(ids, cache=cache.record())
        start = positions - window
        win = time_ms(
            lambda ids=ids, c=cache, s=start: model(ids[:, s:], cache=c, start=s), repeats, sync
        )
        row = {"batch": batch, "full_ms": full, "window_ms": win}
        if device.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        out["passes"].append(row)
        print(json.dumps({"batch": batch, "full_ms": full["median"],
                          "window_ms": win["median"]}), flush=True)  # fmt: skip
        del cache
    out["projection_minutes"] = [
        {
            "batch": r["batch"],
            "exact": projection(r["full_ms"]["median"], r["window_ms"]["median"], r["batch"]),
            **{
                f"approximate, {t} tokens per window pass (assumed)": projection(
                    r["full_ms"]["median"],
                    r["window_ms"]["median"],
                    r["batch"],
                    tokens_per_window_pass=t,
                )
                for t in (2, 4, 8)
            },
        }  # fmt: skip
        for r in out["passes"]
    ]
    for p in out["projection_minutes"]:
        print(json.dumps(p), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--gpu", action="store_true", help="the GPU part (iLLaDA-8B's shape)")
    ap.add_argument("--dry-run", action="store_true", help="the GPU part, tiny, on the CPU")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="CPU: the first n held-out items")
    args = ap.parse_args()
    record = {"machine": {**environment_report(), "processor": processor_name()},
              "threads": torch.get_num_threads()}  # fmt: skip
    if args.gpu or args.dry_run:
        if not args.dry_run:
            record["gpu"] = torch.cuda.get_device_name()
        record |= gpu(args.repeats, args.dry_run)
    else:
        record |= cpu(args.repeats, args.limit)
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
