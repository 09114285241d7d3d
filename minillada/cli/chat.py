"""Chat with an Instruct model from the command line.

    python -m minillada.cli.chat --model iLLaDA-8B-Instruct -v          # the paper's settings
    python -m minillada.cli.chat --model LLaDA-8B-Instruct             # fixed canvas of 256
    python -m minillada.cli.chat --model data/checkpoints/instruct_shakespeare -v --gen-length 32 \\
        --block-length 8

``--model`` is a released model's name, found where ``python -m minillada.cli.download_weights``
puts it (``$MINILLADA_WEIGHTS_DIR/<name>``, default ``data/weights/<name>``, or the hub cache of
``hf download``), or any snapshot folder with weights and tokenizer files (the released LLaDA or
iLLaDA layout, or one written by minillada's saver).

The defaults are the papers' settings for the mode: with ``--variable-length`` (``-v``, iLLaDA's
block-after-block generation) a budget of 2,048 tokens in blocks of 32, 32 steps per block, and
the end-of-thinking boost 100 (power 3) when the model thinks before it answers; without it
LLaDA's fixed canvas of 256 tokens in blocks of 32 and 256 steps. Everything is checked before
the weights load: the folder, the settings against the model's context and tokenizer, and the
device's memory. An empty line or end of input ends the chat.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from minillada.checkpoints.devices import DeviceError, device_advice
from minillada.checkpoints.released import (
    RELEASED,
    _load,
    cpu_dtype,
    inspect_snapshot,
    released_folder,
)
from minillada.runtime import portable_paths
from minillada.sampling.answer import ILLADA_INSTRUCT, LLADA_INSTRUCT
from minillada.sampling.chat import Chat


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--model", required=True, help=f"a released model ({', '.join(RELEASED)}) or a folder"
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--dtype", choices=["bfloat16", "float32"], default=None, help="default: bf16 on a GPU"
    )
    ap.add_argument(
        "--variable-length", "-v", action="store_true", help="iLLaDA: one block at a time"
    )
    ap.add_argument("--gen-length", type=int, default=None, help="canvas, or budget (-v)")
    ap.add_argument("--block-length", type=int, default=None, help="default 32")
    ap.add_argument("--steps", type=int, default=None, help="in all; per block with -v")
    ap.add_argument("--threshold", type=float, default=None, help="lesson 8: reveal if this sure")
    ap.add_argument("--cache", choices=["prefix", "dual"], default=None, help="lesson 8")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument(
        "--think-end-boost", type=float, default=None, help="default 100 with -v for a thinker"
    )
    ap.add_argument("--think-end-power", type=float, default=3.0)
    ap.add_argument("--mask-id", type=int, default=None, help="when the files do not name it")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def _folder(model: str) -> tuple[Path, str | None]:
    """The snapshot folder of ``--model`` and the released name it stands for (if any)."""
    if model in RELEASED:
        return released_folder(model), model
    return Path(model).expanduser(), None


def main(argv: list[str] | None = None) -> list[str]:
    args = build_parser().parse_args(argv)
    folder, name = _folder(args.model)
    report = inspect_snapshot(folder, name, mask_id=args.mask_id)
    if not report.ok:
        raise SystemExit(portable_paths(f"Cannot chat with {args.model}:\n{report}"))
    tokenizer = report.tokenizer
    if tokenizer.chat_template is None:
        raise SystemExit(
            f"{args.model} has no chat template: it is a Base model, which continues plain text "
            "and was never trained on chats. Chat with the Instruct model."
        )
    base = ILLADA_INSTRUCT if args.variable_length else LLADA_INSTRUCT
    block = args.block_length or base.block_length
    gen = args.gen_length or base.gen_length
    default_steps = block if args.variable_length else gen
    boost = args.think_end_boost
    if boost is None:
        boost = base.think_end_boost if args.variable_length and tokenizer.thinks else 0.0
    settings = replace(
        base,
        gen_length=gen,
        block_length=block,
        steps=args.steps or default_steps,
        temperature=args.temperature,
        threshold=args.threshold,
        cache=args.cache,
        think_end_boost=boost,
        think_end_power=args.think_end_power,
    )
    try:
        settings.check(report.config.max_sequence_length, tokenizer.thinks)
    except ValueError as err:
        raise SystemExit(f"{err}\nNothing was loaded; change the flags above.") from err
    device = torch.device(args.device)
    if args.dtype is not None:
        dtype = getattr(torch, args.dtype)
    else:
        dtype = torch.bfloat16 if device.type == "cuda" else cpu_dtype(report.config)
    try:  # _load checks the device before it reads a weight
        loaded = _load(report, device, dtype)
    except DeviceError as err:
        raise SystemExit(f"{err}\n{device_advice(report.config, dtype)}") from err
    chat = Chat(loaded.model, tokenizer, settings, torch.Generator().manual_seed(args.seed))
    print(portable_paths(loaded.summary()))
    print(f"{settings.describe()}; an empty line ends the chat.")
    replies = []
    for line in sys.stdin:
        if not line.strip():
            break
        turn = chat.say(line.rstrip("\n"))
        print(f"> {turn.answer}", flush=True)
        replies.append(turn.answer)
    return replies


if __name__ == "__main__":
    main()
