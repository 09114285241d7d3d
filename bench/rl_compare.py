"""Does RL improve lesson 6's model? GRPO and wd1 against the SFT model they start from (issue 25).

    ATEN_CPU_CAPABILITY=avx2 python bench/rl_compare.py --out bench/rl_compare.json
    python bench/rl_compare.py --quick --out /tmp/rl_quick.json     # every part, tiny (the test)

1. **The start**: lesson 6's shipped instruct model answers the 490 held-out instructions with the
   fixed canvas and with variable length (temperature 0), every item's grade kept; and pass@k at
   temperature 1 on the fixed canvas (k samples per item, right if any is exact): the headroom a
   policy gradient can turn into greedy accuracy.
2. **RL**: ``python -m minillada.cli.train_rl`` for each method (``--methods``) and seed
   (``--seeds``) with the same settings, each scored on the same 490 items; McNemar's exact test
   of each run against the start, per sampler (``minillada.estimate.paired_comparison``).
3. **More SFT at equal wall-clock**: lesson 6's own recipe (LLaDA's SFT) continued from the same
   start for as many seconds as the median RL run trained (its seconds per iteration measured
   first on a short probe), scored and tested the same way: does RL beat simply training longer?

``--start`` replaces lesson 6's model with another checkpoint (say, one trained on with more SFT):
RL and more SFT both continue from it, so the comparison asks what a further stretch of training
is best spent on. ``--sft-seeds`` trains more SFT on several seeds, and each method's runs are then
tested against them together by a paired bootstrap over the items (``paired_bootstrap``).

Everything is written to ``--out`` as it finishes; runs go to ``--workdir``. ``--baselines-from``
takes parts 1 and 3 from an earlier record of this script (the start and more SFT do not depend on
the RL settings), so a new RL setting costs only its own runs.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from minillada.checkpoints.hf import load_hf_checkpoint
from minillada.checkpoints.shipped import INSTRUCT_SHAKESPEARE, METRICS_FILE, shipped_checkpoint
from minillada.cli import train_rl, train_sft
from minillada.data.downloads import load_text
from minillada.data.instructions import TASKS, make_instruction_data
from minillada.data.tokenizer import LLaDATokenizer
from minillada.estimate import paired_bootstrap, paired_comparison, wilson_interval
from minillada.evaluation.instructions import sampled_grades
from minillada.runtime import environment_report, processor_name

SAMPLERS = ("fixed", "variable")


@torch.no_grad()
def pass_at_k(model, tok, items, k: int, gen_length: int, block_length: int, seed: int) -> dict:
    """k samples per item at temperature 1 (fixed canvas, one token per step); an item passes if
    any sample is exact. Also the mean single-sample accuracy (pass@1 at temperature 1)."""
    grades = sampled_grades(model, tok, items, k, 1.0, gen_length, block_length, seed)
    passed = sum(any(g) for g in grades)
    n = len(items)
    return {"k": k, "n": n, "pass_at_k": passed / n,
            "interval95": list(wilson_interval(passed, n)),
            "temperature_1_accuracy": sum(map(sum, grades)) / (n * k)}  # fmt: skip


def signal_per_rollout(run: dict) -> dict:
    """How much each rollout could teach: its groups whose answers' rewards differ (a group whose
    rewards are all equal has advantage 0 everywhere), averaged over the run's rollouts."""
    cfg, history = run["rl_config"], run["history"]
    zero = history["zero_variance_groups"][:: cfg["inner_updates"]]  # one entry per rollout
    return {"rollouts": len(zero), "prompts_per_rollout": cfg["prompts_per_step"],
            "groups_with_signal_per_rollout":
                cfg["prompts_per_step"] * (1 - sum(zero) / len(zero))}  # fmt: skip


def against(start: dict, run: dict) -> dict:
    """McNemar's exact test of a run against the start (or any model scored on the same items:
    ``start`` is its evaluation, {sampler: scores}), per sampler."""
    out = {}
    for sampler in SAMPLERS:
        a = start[sampler]["all"]["correct_items"]
        b = run["evaluation"][sampler]["all"]["correct_items"]
        c = paired_comparison(b, a)  # A = the run, B = the start
        out[sampler] = {
            "run": sum(b) / len(b), "start": sum(a) / len(a), "run_only": c.only_a,
            "start_only": c.only_b, "p_two_sided": c.p_two_sided,
            "p_start_worse": c.p_b_worse,  # below 0.05: the run beats the start at 5%
        }  # fmt: skip
    return out


def runs_of(record: dict, method: str) -> list[dict]:
    """The RL runs of one method (``{method}_seed{seed}`` in ``record["rl"]``)."""
    return [r for n, r in record.get("rl", {}).items() if n.rsplit("_seed", 1)[0] == method]


def finished_run(out: Path, wait: float) -> dict | None:
    """The record of a run already trained in ``out`` (waiting for one still training there,
    started by hand on another core), or None when ``out`` holds no run."""
    if out.exists() and not (out / METRICS_FILE).exists():
        wait_for(out / METRICS_FILE, wait)
    if not (out / METRICS_FILE).exists():
        return None
    print(f"reusing {out}", flush=True)
    return json.loads((out / METRICS_FILE).read_text())


def sft_runs(record: dict) -> dict:
    """The more-SFT baselines by name: one (``more_sft``, train_sft's default seed) or one per
    --sft-seeds seed (``more_sft_runs``)."""
    if "more_sft_runs" in record:
        return {f"more SFT, {name.replace('seed', 'seed ')}": run
                for name, run in record["more_sft_runs"].items()}  # fmt: skip
    return {"more SFT": record["more_sft"]} if "more_sft" in record else {}


def reuse_sft_grades(record: dict, path: Path, n_items: int, quick: bool, base: Path) -> None:
    """Take the more-SFT runs of an earlier record as this record's baseline, by their stored
    grades. That record may have started from an SFT continuation of ``base``, this record's
    start (its --start, made by train_sft from ``base`` with --iters N): each run then counts N
    more iterations, and is tested against this start again."""
    other = json.loads(path.read_text())
    n = other["start"]["fixed"]["all"]["n"]
    if other["quick"] != quick or n != n_items or "more_sft_runs" not in other:
        raise SystemExit(
            f"--sft-grades-from {path}: needs more-SFT runs (--sft-seeds) graded on {n_items} "
            f"items (quick={quick}); it has {'' if 'more_sft_runs' in other else 'no '}such "
            f"runs, graded on {n} items (quick={other['quick']})"
        )
    before = 0
    if "start_path" in other:  # SFT on top of an SFT continuation of this start
        made_by = other.get("start_made_by", "")
        found_base = re.search(r"--base (\S+)", made_by)
        found_iters = re.search(r"--iters (\d+)", made_by)
        if (
            "train_sft" not in made_by
            or found_base is None
            or found_iters is None
            or Path(found_base.group(1)).resolve() != Path(base).resolve()
        ):
            raise SystemExit(
                f"--sft-grades-from {path} started from {other['start_path']}, made by "
                f"{made_by or 'an unrecorded command'}: not a train_sft continuation of {base}"
            )
        before = int(found_iters.group(1))
    record["sft_grades_from"] = {"path": str(path), "machine": other["machine"],
                                 "start_path": other.get("start_path"),
                                 "start_made_by": other.get("start_made_by"),
                                 "iters_before": before}  # fmt: skip
    record["more_sft_runs"] = {
        name: {**entry, "iters": before + entry["iters"], "iters_on_top": entry["iters"],
               "against_start": against(record["start"], entry), "grades_from": str(path)}
        for name, entry in other["more_sft_runs"].items()
    }  # fmt: skip


def wait_for(path: Path, seconds: float) -> None:
    """Wait up to ``seconds`` for a run started elsewhere (``--workdir`` shared by processes on
    other cores) to write ``path``; a run that never finishes is an error, not a hang."""
    print(f"waiting for {path} (another process is training it)", flush=True)
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear within {seconds:.0f} s: did that run die?")
        time.sleep(min(30.0, seconds))


def reused_baselines(record: dict, sfts: dict) -> str:
    """The report's sentence on what this record took from earlier ones ("" if nothing)."""
    if "sft_grades_from" in record:
        g = record["sft_grades_from"]
        start = (f" The start's scores are reused from `{record['baselines_from']}`."
                 if "baselines_from" in record else "")  # fmt: skip
        return (f"{start} More SFT is the runs of `{g['path']}`, by their stored grades (trained "
                f"on {g['machine']}).")  # fmt: skip
    if "baselines_from" not in record:
        return ""
    earlier = record["baselines_from"]
    if record.get("more_sft_reused", True):
        return f" The start's scores and the more-SFT baseline are reused from `{earlier}`."
    if sfts and all(m.get("reused_run") for m in sfts.values()):
        how = "scored again from finished runs in the work folder (each named below)."
    else:
        how = "trained again."
    return f" The start's scores are reused from `{earlier}`; more SFT is {how}"


def markdown(record: dict, command: str) -> str:
    """bench/rl_compare.md: every number from the record."""
    start = record["start"]
    sfts = sft_runs(record)
    start_name = "start" if "start_path" in record else "start (lesson 6)"
    lines = [
        "# RL against the SFT model it starts from, and against more SFT (issue 25)",
        "",
        f"`{command}` on {record['machine']} ({record['environment']['cpu_count']} "
        f"cores), {record['threads']} thread(s) per run; torch "
        f"{record['environment'].get('torch', '?')}. Every model scored on lesson 6's 490 held-out "
        "items, temperature 0, 32 tokens in blocks of 8; McNemar's exact test on the same items.",
        "",
        f"RL settings: `{' '.join(record['rl_args'])}` on top of the defaults of "
        f"`python -m minillada.cli.train_rl`, {record['iters']} iterations per run."
        + reused_baselines(record, sfts),
        "",
        *(
            [
                f"The start is `{record['start_path']}`, not lesson 6's model: "
                f"{record.get('start_made_by', 'a checkpoint given with --start')}",
                "",
            ]
            if "start_path" in record
            else []
        ),  # fmt: skip
        "## Accuracy per task",
        "",
        "| model | sampler | " + " | ".join(TASKS) + " | all [95% interval] |",
        "|---|---|" + "---|" * len(TASKS) + "---|",
    ]
    models = [(start_name, start)]
    models += [(name, run["evaluation"]) for name, run in record.get("rl", {}).items()]
    models += [(f"{name} ({run['iters']} iters)", run["evaluation"]) for name, run in sfts.items()]
    for name, ev in models:
        for s in SAMPLERS:
            cells = " | ".join(f"{ev[s][t]['accuracy']:.1%}" for t in TASKS)
            lo, hi = ev[s]["all"]["interval95"]
            lines.append(f"| {name} | {s} | {cells} | {ev[s]['all']['accuracy']:.1%} "
                         f"[{lo:.1%}, {hi:.1%}] |")  # fmt: skip
    if "pass_at_k" in start:
        k = start["pass_at_k"]
        lines += ["", f"Start, fixed canvas at temperature 1: pass@{k['k']} {k['pass_at_k']:.1%} "
                  f"[{k['interval95'][0]:.1%}, {k['interval95'][1]:.1%}], one answer "
                  f"{k['temperature_1_accuracy']:.1%}."]  # fmt: skip
    lines += [
        "",
        "## Paired tests against the start",
        "",
        "| run | train s | sampler | start | run | right only in run | only in start | "
        "p two-sided | p one-sided (run better) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in [*record.get("rl", {}).items(), *sfts.items()]:
        for s, t in run["against_start"].items():
            lines.append(
                f"| {name} | {run['train_seconds']:.0f} | {s} | {t['start']:.1%} | {t['run']:.1%}"
                f" | {t['run_only']} | {t['start_only']} | {t['p_two_sided']:.3g} | "
                f"{t['p_start_worse']:.3g} |"
            )
    if any("groups_with_signal_per_rollout" in r for r in record.get("rl", {}).values()):
        lines += ["", "## What the rollouts held", "",
                  "| run | rollouts | prompts per rollout | groups with signal per rollout "
                  "| reward, first and last iteration |", "|---|---|---|---|---|"]  # fmt: skip
        for name, run in record["rl"].items():
            if "groups_with_signal_per_rollout" in run:
                first, last = run["reward_first_last"]
                lines.append(f"| {name} | {run['rollouts']} | {run['prompts_per_rollout']} | "
                             f"{run['groups_with_signal_per_rollout']:.1f} | {first:.3f}, "
                             f"{last:.3f} |")  # fmt: skip
    for sft_name, sft in sfts.items() if record.get("rl") else ():
        lines += [
            "",
            f"## Paired tests against {sft_name}",
            "",
            "| run | sampler | more SFT | run | right only in run | only in more SFT | "
            "p two-sided | p one-sided (run better) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, run in record["rl"].items():
            versus = against(sft["evaluation"], run)
            for s, t in versus.items():
                lines.append(
                    f"| {name} | {s} | {t['start']:.1%} | {t['run']:.1%} | {t['run_only']} | "
                    f"{t['start_only']} | {t['p_two_sided']:.3g} | {t['p_start_worse']:.3g} |"
                )
    for sft_name, m in sfts.items():
        lines += ["", f"{sft_name[0].upper()}{sft_name[1:]}: {m['iters']} iterations of "
                  "lesson 6's recipe, constant lr 3e-5, "
                  f"{m['train_seconds']:.0f} s of training ("
                  + (f"target {m['target_seconds']:.0f} s, " if m["target_seconds"] else "")
                  + f"from {m['target_from']}; the RL runs' median was "
                  f"{record.get('rl_median_train_seconds', float('nan')):.0f} s)."]  # fmt: skip
        if m.get("reused_run"):
            lines[-1] += f" A finished run, reused: `{m['reused_run']}`."
        if m.get("grades_from"):
            g = record["sft_grades_from"]
            lines[-1] += f" Its grades are reused from `{m['grades_from']}`" + (
                f": {g['iters_before']} iterations made its start `{g['start_path']}` "
                f"({g['start_made_by']}), then {m['iters_on_top']} more; the time above is "
                "the second part's."
                if g["iters_before"]
                else "."
            )
        if "rl_probe" in record and m["seconds_per_iter"] is not None:
            r = record["rl_probe"]
            lines[-1] += (
                f" Both timed alone on this machine, {record['threads']} thread(s): the RL setting "
                f"{r['seconds_per_iter']:.2f} s per iteration ({r['iters']} iterations in "
                f"{r['train_seconds']:.0f} s), SFT {m['seconds_per_iter']:.3f} s per iteration (a "
                "short probe); the RL runs' recorded seconds are longer where other runs shared "
                "the machine."
            )
        elif "rl_probe" in record:
            r = record["rl_probe"]
            lines[-1] += (
                f" The RL setting timed alone from this start, {record['threads']} thread(s): "
                f"{r['seconds_per_iter']:.2f} s per iteration ({r['iters']} iterations in "
                f"{r['train_seconds']:.0f} s), {r['seconds_per_iter'] * record['iters']:.0f} s for "
                f"{record['iters']} iterations."
            )
    pooled = record.get("rl_against_sft_seeds", {})
    if pooled:
        lines += [
            "",
            "## Each method's seeds against more SFT's seeds",
            "",
            "Mean accuracy over each side's runs; a paired bootstrap over the 490 items "
            f"({next(iter(pooled.values()))['fixed']['draws']:,} resamples, every run's "
            "grade of an item kept together). It asks whether these runs differ on these "
            "items; with few seeds per side it does not measure what another seed would do.",
            "",
            "| method | sampler | runs (RL, SFT) | RL | more SFT | difference [95% interval] "
            "| p one-sided (RL better) |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, per_sampler in pooled.items():
            for s, b in per_sampler.items():
                lo, hi = b["interval95"]
                lines.append(
                    f"| {method} | {s} | {b['runs_a']}, {b['runs_b']} | {b['mean_a']:.1%} | "
                    f"{b['mean_b']:.1%} | {b['difference']:+.1%} [{lo:+.1%}, {hi:+.1%}] | "
                    f"{b['p_a_not_better']:.3g} |"
                )
    lines += ["", "## Per method: mean and range over seeds", ""]
    methods = sorted({n.rsplit("_seed", 1)[0] for n in record.get("rl", {})})
    for m in methods:
        for s in SAMPLERS:
            acc = [r["against_start"][s]["run"] for r in runs_of(record, m)]
            wins = sum(r["against_start"][s]["p_start_worse"] < 0.05 for r in runs_of(record, m))
            lines.append(
                f"- {m}, {s}: {statistics.mean(acc):.1%} (range {min(acc):.1%} to "
                f"{max(acc):.1%}) over {len(acc)} seed{'s' * (len(acc) > 1)}; {wins} of "
                f"{len(acc)} beat the start at 5%"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, default=Path("runs/rl_compare"))
    ap.add_argument("--methods", default="grpo,wd1")
    ap.add_argument(
        "--seeds", default="3", help="a count (seeds 0..n-1), or a comma list: 1337,1,2 (one: 7,)"
    )
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--k", type=int, default=8, help="samples per item for pass@k (0: skip it)")
    ap.add_argument(
        "--start",
        type=Path,
        default=None,
        help="the checkpoint RL and more SFT continue from (default: lesson 6's)",
    )
    ap.add_argument("--sft-seeds", default="",
                    help="train more SFT once per seed in this comma list (default: once, with "
                    "train_sft's default seed)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny settings: tests the script")
    ap.add_argument("--sft-seconds", type=float, default=0.0,
                    help="train more SFT this long, before the RL runs (default: after them, "
                    "for the RL runs' median seconds)")  # fmt: skip
    ap.add_argument("--sft-iters", type=int, default=0,
                    help="train more SFT for exactly this many iterations (no probe): matches a "
                    "wall-clock measured earlier at a known seconds per iteration")  # fmt: skip
    ap.add_argument("--rl-probe-iters", type=int, default=0,
                    help="match more SFT to K iterations of the RL setting timed alone (then "
                    "scaled to --iters), not to the RL runs' recorded seconds, which count "
                    "whatever else the machine ran beside them")  # fmt: skip
    ap.add_argument(
        "--wait",
        type=float,
        default=7200.0,
        help="seconds to wait for a run folder another process is still training",
    )
    ap.add_argument(
        "--baselines-from",
        type=Path,
        default=None,
        help="an earlier --out of this script: reuse its start and more-SFT scores (its start "
        "only, with --sft-seconds, --sft-iters or --rl-probe-iters: more SFT is trained again)",
    )
    ap.add_argument(
        "--sft-grades-from",
        type=Path,
        default=None,
        help="an earlier --out whose more-SFT runs (--sft-seeds) are the baseline here, by their "
        "stored grades on the same items (their folders may be gone); that record may start "
        "from an SFT continuation of this start (--start): its iterations are counted from here",
    )
    ap.add_argument("rl_args", nargs="*", help="more train_rl flags, after --")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    quick = args.quick
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    seeds = seeds if "," in args.seeds else list(range(seeds[0]))
    per_task = ["--train-per-task", "10", "--held-out-per-task", "1"] if quick else []
    shape = ["--prompts-per-step", "2", "--group-size", "2", "--inner-updates", "2",
             "--save-every", "2", "--steps", "8"] if quick else []  # fmt: skip
    iters = 2 if quick else args.iters
    gen, block = 32, 8
    record: dict = {"machine": processor_name(), "environment": environment_report(),
                    "iters": iters, "quick": quick, "threads": args.threads,
                    "rl_args": args.rl_args}  # fmt: skip
    command = "python bench/rl_compare.py " + " ".join(sys.argv[1:])

    def save() -> None:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        if "start" in record:
            args.out.with_suffix(".md").write_text(markdown(record, command))

    base = args.start or shipped_checkpoint(INSTRUCT_SHAKESPEARE)
    if args.start is not None:
        if not (args.start / "config.json").exists():
            raise SystemExit(f"--start {args.start}: no config.json there; give a checkpoint "
                             "folder (train_sft --out, or data/checkpoints/...)")  # fmt: skip
        record["start_path"] = str(args.start)
        made_by = args.start / METRICS_FILE
        if made_by.exists():
            record["start_made_by"] = f"`{json.loads(made_by.read_text())['command']}`."
    sft_seeds = [int(x) for x in args.sft_seeds.split(",") if x.strip()] or [None]
    model = load_hf_checkpoint(base, dtype=torch.float32)
    tok = LLaDATokenizer.from_folder(base)
    held_out_per_task = 1 if quick else 100
    items = make_instruction_data(load_text(), 10 if quick else 10_000, held_out_per_task,
                                  0).held_out  # fmt: skip
    t0 = time.perf_counter()
    earlier = json.loads(args.baselines_from.read_text()) if args.baselines_from else None
    if earlier is not None:
        n = earlier["start"]["fixed"]["all"]["n"]
        if earlier.get("start_path") != record.get("start_path"):
            raise SystemExit(
                f"--baselines-from {args.baselines_from} started from "
                f"{earlier.get('start_path', 'lesson 6')}, this run from "
                f"{record.get('start_path', 'lesson 6')}: its scores do not apply"
            )
        if earlier["quick"] != quick or n != len(items) or "more_sft" not in earlier:
            raise SystemExit(
                f"--baselines-from {args.baselines_from}: its start was scored on {n} items "
                f"(quick={earlier['quick']}) and has {'a' if 'more_sft' in earlier else 'no'} "
                f"more-SFT record; this run needs {len(items)} items (quick={quick}) and both"
            )
        record["start"] = earlier["start"]
        record["baselines_from"] = str(args.baselines_from)
    else:
        record["start"] = {s: train_rl.score_held_out(model, tok, items, s, gen, block)
                           for s in SAMPLERS}  # fmt: skip
        if args.k:
            record["start"]["pass_at_k"] = pass_at_k(model, tok, items, 2 if quick else args.k,
                                                     gen, block, seed=0)  # fmt: skip
            print(json.dumps(record["start"]["pass_at_k"]), flush=True)
        record["start"]["seconds"] = time.perf_counter() - t0
    save()

    def more_sft(seconds: float | None, source: str) -> None:
        """Lesson 6's recipe continued from the start for ``seconds`` of training (its seconds
        per iteration from a short probe; or exactly --sft-iters iterations), scored and tested
        like an RL run."""
        if args.sft_iters:
            per_iter, sft_iters = None, args.sft_iters
        else:
            probe_iters = 2 if quick else 20
            probe = train_sft.main(["--recipe", "llada", "--base", str(base), "--out",
                                    str(args.workdir / "sft_probe"), "--iters", str(probe_iters),
                                    "--eval-interval", "0", "--threads", str(args.threads),
                                    "--no-final-eval", *per_task])  # fmt: skip
            per_iter = probe["train_seconds"] / probe_iters
            sft_iters = max(1, round(seconds / per_iter))
        for seed in sft_seeds:
            out = args.workdir / ("sft_more" if seed is None else f"sft_more_seed{seed}")
            sft = finished_run(out, args.wait) if seed is not None else None
            reused = sft is not None
            if reused:  # reuse only what matches
                cfg = sft["train_config"]
                if (cfg["iters"], cfg["seed"], cfg["base"], cfg["lr"], cfg["min_lr"]) != (
                        sft_iters, seed, str(base), 3e-5, 3e-5):  # fmt: skip
                    raise SystemExit(
                        f"{out} holds another SFT run ({cfg['iters']} iterations "
                        f"from {cfg['base']}, seed {cfg['seed']}); move it away"
                    )
            else:
                sft = train_sft.main(["--recipe", "llada", "--base", str(base), "--out", str(out),
                                      "--iters", str(sft_iters), "--lr", "3e-5", "--min-lr",
                                      "3e-5", "--warmup", "0", "--eval-interval", "0",
                                      "--threads", str(args.threads), "--no-final-eval",
                                      *per_task, *(["--seed", str(seed)] if seed is not None
                                                   else [])])  # fmt: skip
            sft_model = load_hf_checkpoint(out, dtype=torch.float32)
            sft_run = {
                "evaluation": {
                    s: train_rl.score_held_out(sft_model, tok, items, s, gen, block)
                    for s in SAMPLERS
                }
            }
            entry = {"iters": sft_iters, "seconds_per_iter": per_iter,
                     "target_seconds": seconds, "target_from": source,
                     "train_seconds": sft["train_seconds"], "command": sft["command"],
                     "against_start": against(record["start"], sft_run),
                     "evaluation": sft_run["evaluation"],
                     **({"reused_run": str(out)} if reused else {})}  # fmt: skip
            if seed is None:
                record["more_sft"] = entry
            else:
                record.setdefault("more_sft_runs", {})[f"seed{seed}"] = entry
            save()

    retrain_sft = bool(args.sft_seconds or args.sft_iters or args.rl_probe_iters)
    if args.sft_grades_from and retrain_sft:
        raise SystemExit("--sft-grades-from reuses more SFT; it takes no --sft-seconds, "
                         "--sft-iters or --rl-probe-iters")  # fmt: skip
    start_flag = ["--base", str(base)] if args.start is not None else []
    if earlier is not None:
        record["more_sft_reused"] = not retrain_sft
        if not retrain_sft:
            record["more_sft"] = earlier["more_sft"]
    if args.sft_grades_from:
        reuse_sft_grades(record, args.sft_grades_from, len(items), quick, base)
        save()
    if args.rl_probe_iters:  # the RL setting's own speed, measured alone: equal time for both
        shutil.rmtree(args.workdir / "rl_probe", ignore_errors=True)
        probe = train_rl.main([
            "--out", str(args.workdir / "rl_probe"), "--iters", str(args.rl_probe_iters),
            "--threads", str(args.threads), "--final-eval", "none", *per_task, *shape,
            *start_flag, *args.rl_args,
        ])  # fmt: skip
        rl_per_iter = probe["train_seconds"] / args.rl_probe_iters
        record["rl_probe"] = {"iters": args.rl_probe_iters, "train_seconds": probe["train_seconds"],
                              "seconds_per_iter": rl_per_iter}  # fmt: skip
    if args.sft_iters:  # an equal time measured earlier; a probe above is recorded beside it
        more_sft(None, f"--sft-iters {args.sft_iters}")
    elif args.rl_probe_iters:
        more_sft(rl_per_iter * iters, f"{args.rl_probe_iters} RL iterations timed alone, x {iters}")
    elif args.sft_seconds:  # known before the RL runs end: the SFT baseline first
        more_sft(args.sft_seconds, "--sft-seconds")
    record["rl"] = {}
    seconds = []
    for method in args.methods.split(","):
        for seed in seeds[:1] if quick else seeds:
            out = args.workdir / f"{method}_seed{seed}"
            run = finished_run(out, args.wait)  # trained earlier or in parallel: reuse it
            if run is None:
                run = train_rl.main([
                    "--out", str(out), "--method", method, "--seed", str(seed),
                    "--iters", str(iters), "--threads", str(args.threads), *per_task, *shape,
                    *start_flag, *args.rl_args,
                ])  # fmt: skip
            seconds.append(run["train_seconds"])
            record["rl"][f"{method}_seed{seed}"] = {
                "command": run["command"],
                "train_seconds": run["train_seconds"],
                "reward_first_last": [run["history"]["reward"][0], run["history"]["reward"][-1]],
                **signal_per_rollout(run),
                "kl_per_token": run["history"]["kl"],  # k3 to the start, per iteration
                "against_start": against(record["start"], run),
                "evaluation": run["evaluation"],
            }
            print(json.dumps(record["rl"][f"{method}_seed{seed}"]["against_start"]), flush=True)
            save()
    record["rl_median_train_seconds"] = statistics.median(seconds)
    if earlier is None and not retrain_sft:  # more SFT at the RL runs' median wall-clock
        more_sft(statistics.median(seconds), "the RL runs' median")
    sfts = sft_runs(record)
    if sfts and len(sfts) + len(record["rl"]) > 2:  # several runs on a side: pool them
        record["rl_against_sft_seeds"] = {}
        for method in args.methods.split(","):
            runs = runs_of(record, method)
            per_sampler = {}
            for s in SAMPLERS:
                a = [r["evaluation"][s]["all"]["correct_items"] for r in runs]
                b = [r["evaluation"][s]["all"]["correct_items"] for r in sfts.values()]
                boot = paired_bootstrap(a, b, draws=10_000, seed=0)
                per_sampler[s] = {
                    "runs_a": boot.runs_a,
                    "runs_b": boot.runs_b,
                    "mean_a": boot.mean_a,
                    "mean_b": boot.mean_b,
                    "difference": boot.difference,
                    "interval95": list(boot.interval95),
                    "p_a_not_better": boot.p_a_not_better,
                    "draws": boot.draws,
                }
            record["rl_against_sft_seeds"][method] = per_sampler
    save()
    print(json.dumps({k: v for k, v in record.items() if k != "environment"}, indent=1))


if __name__ == "__main__":
    main()
