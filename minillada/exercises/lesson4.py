"""Checkers for lesson 4 (notebooks/04_subwords_and_llada_blocks.ipynb)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from minillada.data.bpe import merge_pair, train_bpe_fast
from minillada.data.subword import bits_per_char
from minillada.exercises import (
    Case,
    CheckResult,
    ExerciseFailed,
    assert_same,
    check,
    run_experiment,
    seeded,
)
from minillada.models.llada import LLaDABlock, LLaDAModel, RMSNorm, preset


def check_merge_pair(fn: Callable) -> CheckResult:
    """Exercise 4.1: fn(ids, pair, new_id) -> ids with every occurrence of pair, scanned left to
    right without overlaps, replaced by new_id."""
    cases = [
        Case("one occurrence in the middle", ([104, 101, 108, 108, 111], (108, 108), 256)),
        Case("several occurrences", ([1, 2, 3, 1, 2, 1, 2], (1, 2), 300)),
        Case("overlapping run 'aaa': merge left first", ([97, 97, 97], (97, 97), 256)),
        Case("the pair does not occur", ([5, 6, 7], (6, 5), 256)),
        Case("empty and single-token inputs", ([], (1, 2), 256)),
        Case("a single token", ([1], (1, 2), 256)),
    ]
    return check("Exercise 4.1", fn, merge_pair, cases, "minillada.data.bpe.merge_pair")


# --- Exercise 4.2: characters per token against the vocabulary size -------------------------------

VOCAB_SIZES = (512, 1024, 2048, 4096)
LESSON_WIDTH = 128  # d_model of the subword model the lesson trains


def validation_tokens(train_text: str, val_text: str, vocab_size: int) -> int:
    """Tokens of ``val_text`` under a byte-level BPE of ``vocab_size`` ids trained on
    ``train_text`` with ``train_bpe_fast`` (LLaDA's special tokens included)."""
    return len(train_bpe_fast(train_text, vocab_size).encode(val_text).ids)


def check_chars_per_token(fn: Callable, train_text: str, val_text: str) -> CheckResult:
    """Exercise 4.2: fn(vocab_sizes) -> {V: characters per token of the validation text, BPE of
    V ids trained on the training text}; then the outcome: how much longer a token gets per
    doubling of the vocabulary, against what the embedding and the head cost."""
    got = run_experiment("Exercise 4.2", fn, list(VOCAB_SIZES))
    if got is None:
        return CheckResult(False)
    measured = {}
    for V in VOCAB_SIZES:
        n_tokens = validation_tokens(train_text, val_text, V)
        expected = len(val_text) / n_tokens
        # Both sides divide the same two integers: only the last bit of a float can differ.
        try:
            ok = abs(float(got[V]) - expected) <= 1e-9 * expected
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ExerciseFailed(
                f"Exercise 4.2: vocabulary {V}: expected {expected:.4f} characters per token "
                f"({len(val_text):,} validation characters in {n_tokens:,} tokens), got "
                f"{got[V]!r}. Train with train_bpe_fast on the training text only, encode the "
                "validation text, and count how many characters one token spells on average."
            )
        measured[V] = expected
    values = [measured[V] for V in VOCAB_SIZES]
    gains = [b - a for a, b in zip(values[:-1], values[1:], strict=True)]
    listing = ", ".join(f"{measured[V]:.2f} ({V:,} ids)" for V in VOCAB_SIZES)
    print(f"Exercise 4.2 passed: characters per validation token {listing}.")
    if all(g > 0 for g in gains):
        if all(b < a for a, b in zip(gains[:-1], gains[1:], strict=True)):
            shape = "less each time"
        elif max(gains) <= 1.5 * min(gains):
            shape = "about the same each time (a token's length grows like log V)"
        else:
            shape = "unevenly"
        first, last = VOCAB_SIZES[0], VOCAB_SIZES[-1]
        print(
            f"  Each doubling of the vocabulary adds {min(gains):.2f} to {max(gains):.2f} "
            f"characters per token, {shape}, while the embedding and the head, 2 x V x "
            f"{LESSON_WIDTH} parameters at this lesson's width, double each time: "
            f"{2 * first * LESSON_WIDTH / 1e6:.2f}M at {first:,} ids, "
            f"{2 * last * LESSON_WIDTH / 1e6:.2f}M at {last:,}."
        )
    else:
        print("  A larger vocabulary did not always give longer tokens on this text.")
    return CheckResult(True)


# --- Exercise 4.3: RMSNorm -----------------------------------------------------------------------


def _rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    norm = RMSNorm(weight.shape[0], eps).to(weight.dtype)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


def check_rms_norm(fn: Callable) -> CheckResult:
    """Exercise 4.3: fn(x, weight, eps) -> RMSNorm(x): normalise in float32, cast back to x's dtype,
    then multiply by weight."""
    g = seeded(0)
    x = torch.randn(2, 5, 16, generator=g) * 3
    w = 1 + 0.1 * torch.randn(16, generator=g)
    cases = [
        Case("float32 input, random weight", (x, w, 1e-5)),
        Case("a large eps changes the result", (x * 1e-3, w, 1e-2)),
        Case(
            "bfloat16 input and weight: cast back to bf16 *before* the weight multiply",
            (x.bfloat16(), w.bfloat16(), 1e-5),
        ),
    ]
    return check("Exercise 4.3", fn, _rms_norm_reference, cases, "minillada.models.llada.RMSNorm")


# --- Exercise 4.4: one LLaDA block's forward pass ------------------------------------------------


@dataclass
class BlockParts:
    """The four parts of one LLaDABlock, without the block's own forward."""

    attn_norm: RMSNorm  # the norm before attention
    attn: torch.nn.Module  # Attention: attn(h, rotary, cos, sin) -> (B, L, D)
    ff_norm: RMSNorm  # the norm before the MLP
    mlp: torch.nn.Module  # LLaDAMLP: mlp(h) -> (B, L, D)


def block_parts(block: LLaDABlock) -> BlockParts:
    """The parts of ``block`` (the learner's function gets these, not the block itself)."""
    return BlockParts(block.attn_norm, block.attn, block.ff_norm, block.mlp)


def _block_case(description: str, seed: int, batch: int, length: int, **overrides) -> Case:
    """A float64 block of the tiny preset with every weight random at a scale where both halves
    matter (not the training init, whose small outputs would hide a missing piece)."""
    g = seeded(seed)
    cfg = preset("tiny", **overrides)
    model = LLaDAModel(cfg, dtype=torch.float64, generator=g).requires_grad_(False)
    block = model.transformer.blocks[0]
    for name, p in block.named_parameters():
        if name.endswith("norm.weight"):  # two different gains, so the two norms differ
            p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
        else:  # (out, in): unit-scale outputs
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / p.shape[1] ** 0.5)
    x = torch.randn(batch, length, cfg.d_model, generator=g, dtype=torch.float64)  # (B, L, D)
    cos, sin = model.rotary.tables(length, torch.device("cpu"))  # (L, Dh)
    return Case(description, (x, block_parts(block), model.rotary, cos, sin))


def _block_variants(x, parts, rotary, cos, sin) -> dict[str, torch.Tensor]:
    """The library's block (LLaDABlock.forward run on the parts) and what common mistakes give."""

    def attn(h):
        return parts.attn(h, rotary, cos, sin)

    a, m, n1, n2 = attn, parts.mlp, parts.attn_norm, parts.ff_norm
    x1 = x + a(n1(x))
    post_x1 = n1(x + a(x))
    stream = n1(x)
    stream = stream + a(stream)
    stream = n2(stream)
    return {
        "right": LLaDABlock.forward(parts, x, rotary, cos, sin),
        "a post-norm block (normalising after each residual add, as the 2017 Transformer)": (
            n2(post_x1 + m(post_x1))
        ),
        "no residual around attention (x replaced by the attention output)": (
            a(n1(x)) + m(n2(a(n1(x))))
        ),
        "no residual around the MLP (x replaced by the MLP output)": m(n2(x1)),
        "attn_norm used before the MLP too (each half has a norm of its own)": (x1 + m(n1(x1))),
        "the residual stream itself normalised (only the branch input should be)": (
            stream + m(stream)
        ),
        "a parallel block (attention and MLP both read x; LLaDA runs them one after the other)": (
            x + a(n1(x)) + m(n2(x))
        ),
        "the MLP reads the attention output, not the updated stream": x1 + m(n2(a(n1(x)))),
    }


def _compare_block(expected: dict[str, torch.Tensor], got) -> None:
    # The reference and a right answer run the same float64 operations on the same modules, so
    # they agree to a few units of 1e-16 on values of order 1 (a hand-written attention in another
    # order: ~1e-14); every mistake above changes the output by order 0.1. 1e-10 sits between.
    try:
        assert_same(expected["right"], got, atol=1e-10, rtol=1e-10)
    except ExerciseFailed as err:
        named = [
            what
            for what, value in expected.items()
            if what != "right"
            and torch.is_tensor(got)
            and got.shape == value.shape
            and torch.allclose(got.double(), value, atol=1e-10, rtol=1e-10)
        ]
        hint = f"Your output is {named[0]}." if named else "Follow the figure from the bottom up."
        raise ExerciseFailed(
            f"{err}\n  {hint} In a LLaDA block each half reads a normalised copy of the stream "
            "and adds its output to the stream itself."
        ) from None


def check_llada_block(fn: Callable) -> CheckResult:
    """Exercise 4.4: fn(x, block, rotary, cos, sin) -> one LLaDA block's output, written with the
    block's parts ``attn_norm``, ``attn``, ``ff_norm``, ``mlp``; compared in float64."""
    cases = [
        _block_case("tiny preset, 4 heads, batch 2 of 8 positions", 0, 2, 8),
        _block_case("grouped-query heads: 4 query, 2 key/value", 1, 2, 8, n_kv_heads=2),
        _block_case("one sequence of 16 positions", 2, 1, 16),
        _block_case("a single position", 3, 3, 1),
    ]
    with torch.no_grad():
        return check(
            "Exercise 4.4",
            fn,
            _block_variants,
            cases,
            "minillada.models.llada.LLaDABlock",
            compare=_compare_block,
        )


# --- Exercise 4.5: bits per character ------------------------------------------------------------


def check_bits_per_char(fn: Callable) -> CheckResult:
    """Exercise 4.5: fn(nats_per_token, num_tokens, num_chars) -> bits per character."""
    cases = [
        Case("ln 2 nats per token, one char per token = 1 bit/char", (0.6931471805599453, 10, 10)),
        Case("3 nats/token, 2.5 chars/token", (3.0, 1000, 2500)),
        Case("a character model: tokens == characters", (1.5, 128, 128)),
    ]
    return check("Exercise 4.5", fn, bits_per_char, cases, "minillada.data.subword.bits_per_char")
