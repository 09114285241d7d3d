"""Chat with an Instruct model from the command line.

    python -m minillada.cli.chat --model ~/models/iLLaDA-8B-Instruct --variable-length --device cuda
    python -m minillada.cli.chat --model ~/models/LLaDA-8B-Instruct --gen-length 128 --steps 128

``--model`` is any snapshot folder with weights and tokenizer files (the released LLaDA or iLLaDA
layout, or one written by minillada's saver). An empty line or end of input ends the chat.
"""

from __future__ import annotations

import argparse
import sys

import torch

from minillada.checkpoints.hf import load_hf_checkpoint
from minillada.data.tokenizer import LLaDATokenizer
from minillada.sampling.chat import Chat, ChatSettings


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, help="snapshot folder (weights + tokenizer files)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default=None)
    ap.add_argument("--gen-length", type=int, default=128, help="canvas, or budget")
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--steps", type=int, default=128, help="in all; per block with -v")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument(
        "--variable-length", "-v", action="store_true", help="iLLaDA: one block at a time"
    )
    ap.add_argument("--think-end-boost", type=float, default=0.0, help="iLLaDA-Instruct: 100")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv: list[str] | None = None) -> list[str]:
    args = build_parser().parse_args(argv)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    model = load_hf_checkpoint(args.model, device=args.device, dtype=dtype)
    tokenizer = LLaDATokenizer.from_folder(args.model, mask_id=model.config.mask_token_id)
    settings = ChatSettings(
        gen_length=args.gen_length,
        block_length=args.block_length,
        steps=args.steps,
        temperature=args.temperature,
        variable_length=args.variable_length,
        think_end_boost=args.think_end_boost,
    )
    chat = Chat(model, tokenizer, settings, torch.Generator().manual_seed(args.seed))
    mode = "variable length" if settings.variable_length else f"answer length {settings.gen_length}"
    print(f"{args.model}: {mode}, {settings.steps} steps; an empty line ends the chat.")
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
