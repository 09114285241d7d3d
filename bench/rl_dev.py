"""Choose an RL setting on development items, never on the held-out ones (issue 25, test F).

    python bench/rl_dev.py --out bench/rl_dev.json t06=runs/rl_dev/t06 t03=runs/rl_dev/t03 ...
    python bench/rl_dev.py --quick --out /tmp/dev.json again=data/checkpoints/instruct_shakespeare

Five tests of lesson 9 (A-E) each looked at the same 490 held-out items, and each setting after the
first was chosen knowing how the earlier ones scored there. To pick the next setting without
spending those items, this scores lesson 6's model and each candidate (``name=folder``: a
``train_rl --out`` folder, or any checkpoint) on development items: new items of ``--tasks`` from
the held-out part of the text, none of them a training or held-out item
(``minillada.data.instructions.make_development_items``). Both samplers, greedy, 32 tokens in
blocks of 8, one token per step, as lesson 6 and ``bench/rl_compare.py`` score; each candidate is
paired with the start by McNemar's exact test. The candidate with the most right answers with the
variable-length sampler (``--pick``) is named; its held-out score, measured once afterwards, is then
an unbiased test of that model. Writes ``--out`` and the .md beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from minillada.checkpoints.hf import load_hf_checkpoint
from minillada.checkpoints.shipped import INSTRUCT_SHAKESPEARE, METRICS_FILE, shipped_checkpoint
from minillada.data.downloads import load_text
from minillada.data.instructions import TASKS, make_development_items
from minillada.data.tokenizer import LLaDATokenizer
from minillada.estimate import paired_comparison, wilson_interval
from minillada.evaluation.instructions import SAMPLERS, answer_instructions
from minillada.runtime import environment_report, processor_name

GEN, BLOCK = 32, 8


def candidates(specs: list[str]) -> dict[str, Path]:
    """``name=folder`` pairs -> {name: folder}, each folder checked before any model loads."""
    out = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"candidate {spec!r}: write name=folder (t06=runs/rl_dev/t06)")
        if name in out or name == "start":
            raise SystemExit(f"candidate name {name!r} is used twice ('start' is lesson 6's model)")
        if not (Path(folder) / "config.json").exists():
            raise SystemExit(f"candidate {name}: {folder} holds no config.json; give a checkpoint "
                             "folder (a train_rl --out)")  # fmt: skip
        out[name] = Path(folder)
    return out


def grades(model, tok, items) -> dict[str, list[bool]]:
    """Every item's exact-match grade with each sampler, in order."""
    return {s: [a.correct for a in answer_instructions(model, tok, items, s, GEN, BLOCK,
                                                       batch_size=32)]
            for s in SAMPLERS}  # fmt: skip


def made_by(folder: Path) -> dict:
    """What the candidate's training.json says about how it was trained (nothing for others)."""
    if not (folder / METRICS_FILE).exists():
        return {}
    run = json.loads((folder / METRICS_FILE).read_text())
    keep = ("command", "rl_config", "tasks", "reward", "train_seconds")
    return {k: run[k] for k in keep if k in run}


def markdown(record: dict) -> str:
    """bench/rl_dev.md: every number from the record."""
    n, start = record["n"], record["start"]
    lines = [
        "# Choosing an RL setting on development items (issue 25, test F)",
        "",
        f"`{record['command']}` on {record['machine']}, torch "
        f"{record['environment'].get('torch', '?')}: lesson 6's model and each candidate on {n} "
        f"development items of `{'`, `'.join(record['tasks'])}` (new items from the held-out part "
        "of the text, none of them a training or a held-out item); greedy, 32 tokens in blocks of "
        "8, one token per step; McNemar's exact test against the start on the same items.",
        "",
        "| model | fixed | variable | variable vs start: gained, lost, p two-sided | trained by |",
        "|---|---|---|---|---|",
        f"| start (lesson 6) | {sum(start['fixed'])}/{n} | {sum(start['variable'])}/{n} | | |",
    ]
    for name, c in record["candidates"].items():
        t = c["against_start"]["variable"]
        how = c["made_by"].get("command", c["folder"]).replace("python -m minillada.cli.", "")
        lines.append(
            f"| {name} | {sum(c['grades']['fixed'])}/{n} | {sum(c['grades']['variable'])}/{n} "
            f"| +{t['run_only']}, -{t['start_only']}, p {t['p_two_sided']:.3g} | `{how}` |"
        )
    lo, hi = record["candidates"][record["pick"]]["variable_interval95"]
    lines += ["", f"Picked by the most right answers with the variable-length sampler: "
              f"**{record['pick']}** ({lo:.1%} to {hi:.1%}, 95% Wilson interval)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tasks", default="reverse,repeat")
    ap.add_argument("--n", type=int, default=400, help="development items")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="4 items: tests the script")
    ap.add_argument("candidates", nargs="+", help="name=folder, one per candidate")
    args = ap.parse_args()
    tasks = args.tasks.split(",")
    if unknown := [t for t in tasks if t not in TASKS]:
        raise SystemExit(f"--tasks {args.tasks}: unknown {unknown}; the tasks are {TASKS}")
    folders = candidates(args.candidates)
    torch.set_num_threads(args.threads)
    base = shipped_checkpoint(INSTRUCT_SHAKESPEARE)
    tok = LLaDATokenizer.from_folder(base)
    items = make_development_items(load_text(), 4 if args.quick else args.n, tasks)
    t0 = time.perf_counter()
    start = grades(load_hf_checkpoint(base, dtype=torch.float32).eval(), tok, items)
    record: dict = {"command": "python bench/rl_dev.py " + " ".join(sys.argv[1:]),
                    "machine": processor_name(), "environment": environment_report(),
                    "tasks": tasks, "n": len(items), "start": start, "candidates": {}}  # fmt: skip
    for name, folder in folders.items():
        g = grades(load_hf_checkpoint(folder, dtype=torch.float32).eval(), tok, items)
        against = {}
        for s in SAMPLERS:
            c = paired_comparison(g[s], start[s])  # A = the candidate, B = the start
            against[s] = {"run_only": c.only_a, "start_only": c.only_b,
                          "p_two_sided": c.p_two_sided}  # fmt: skip
        record["candidates"][name] = {
            "folder": str(folder), "made_by": made_by(folder), "grades": g,
            "against_start": against,
            "variable_interval95": list(wilson_interval(sum(g["variable"]), len(items))),
        }  # fmt: skip
        print(f"{name}: fixed {sum(g['fixed'])}, variable {sum(g['variable'])} of {len(items)}",
              flush=True)  # fmt: skip
    variable_right = {n: sum(c["grades"]["variable"]) for n, c in record["candidates"].items()}
    record["pick"] = max(variable_right, key=variable_right.get)  # the first of equals
    record["seconds"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(record))


if __name__ == "__main__":
    main()
