"""Checkers for lesson 4 (notebooks/04_subwords_and_llada_blocks.ipynb)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from minillada.data.bpe import merge_pair, train_bpe_fast
from minillada.exercises import (
    Case,
    CheckResult,
    ExerciseFailed,
    assert_same,
    check,
    run_experiment,
    seeded,
)
from minillada.models.llada import (
    Attention,
    LLaDABlock,
    LLaDAModel,
    RMSNorm,
    RotaryEmbedding,
    preset,
)


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


def validation_tokens(train_text: str, val_text: str, vocab_size: int) -> int:
    """Tokens of ``val_text`` under a byte-level BPE of ``vocab_size`` ids trained on
    ``train_text`` with ``train_bpe_fast`` (LLaDA's special tokens included)."""
    return len(train_bpe_fast(train_text, vocab_size).encode(val_text).ids)


def check_chars_per_token(fn: Callable, train_text: str, val_text: str) -> CheckResult:
    """Exercise 4.2: fn(vocab_sizes) -> {V: characters per token of the validation text, BPE of
    V ids trained on the training text}. Prints the measurement and its change per doubling of
    the vocabulary; what it means is the lesson's discussion, not the checker's."""
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
    steps = ", ".join(
        f"{gain:+.2f} ({a:,} -> {b:,})"
        for gain, a, b in zip(gains, VOCAB_SIZES[:-1], VOCAB_SIZES[1:], strict=True)
    )
    print(f"Exercise 4.2 passed: characters per validation token {listing}.")
    print(f"  change per doubling of the vocabulary: {steps}.")
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


# --- Exercise 4.4: attention with grouped-query heads -------------------------------------------


def _rotate(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str) -> torch.Tensor:
    """RoPE on t (B, H, L, Dh): LLaDA's rotate-half pairs (j, j + Dh/2), or adjacent pairs."""
    if layout == "none":
        return t
    half = t.shape[-1] // 2
    if layout == "half":
        return t * cos + torch.cat([-t[..., half:], t[..., :half]], dim=-1) * sin
    pairs = t.unflatten(-1, (half, 2))  # (2j, 2j+1) side by side, the angle of pair j
    c, s = cos[..., :half], sin[..., :half]
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2)


def _attention_variant(
    x, wq, wk, wv, wo, n_heads, n_kv_heads, cos, sin, *,
    kv_order="interleave", causal=False, rope_q="half", rope_k="half", scale="head_dim",
    split="right", merge="right", softmax_dim=-1, project=True,
) -> torch.Tensor:  # fmt: skip
    """Attention written out, with switches for the common mistakes (the defaults are right)."""
    B, L, D = x.shape
    H, Hkv, Dh = n_heads, n_kv_heads, D // n_heads

    def heads(t, n):  # (B, L, n * Dh) -> (B, n, L, Dh)
        if split == "right":
            return t.view(B, L, n, Dh).transpose(1, 2)
        return t.reshape(B, n, L, Dh)

    q, k, v = heads(x @ wq.T, H), heads(x @ wk.T, Hkv), heads(x @ wv.T, Hkv)
    q, k = _rotate(q, cos, sin, rope_q), _rotate(k, cos, sin, rope_k)
    if kv_order == "interleave":  # query head h reads key/value head h // (H / Hkv)
        k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
    else:  # tiled: query head h reads key/value head h % Hkv
        k, v = k.repeat(1, H // Hkv, 1, 1), v.repeat(1, H // Hkv, 1, 1)
    scores = q @ k.transpose(-2, -1) / {"head_dim": Dh, "d_model": D, "none": 1}[scale] ** 0.5
    if causal:
        future = torch.ones(L, L, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    out = scores.softmax(dim=softmax_dim) @ v  # (B, H, L, Dh)
    out = out.transpose(1, 2).reshape(B, L, D) if merge == "right" else out.reshape(B, L, D)
    return out @ wo.T if project else out


ATTENTION_MISTAKES = {
    "key/value heads repeated in the wrong order (.repeat tiles them: query head h read key/value "
    "head h % n_kv_heads; it should read head h // (n_heads / n_kv_heads), what repeat_interleave "
    "gives)": dict(kv_order="tile"),
    "a causal mask (LLaDA's attention is bidirectional: every position attends to every "
    "position)": dict(causal=True),
    "RoPE not applied to the keys (rotate both the queries and the keys)": dict(rope_k="none"),
    "RoPE not applied to the queries (rotate both the queries and the keys)": dict(rope_q="none"),
    "no RoPE at all": dict(rope_q="none", rope_k="none"),
    "RoPE on adjacent pairs of features (2j, 2j + 1); LLaDA's rotate-half pairs feature j with "
    "j + head_dim / 2": dict(rope_q="adjacent", rope_k="adjacent"),
    "scores not scaled (divide q . k by sqrt(head_dim))": dict(scale="none"),
    "scores scaled by 1 / sqrt(d_model) instead of 1 / sqrt(head_dim)": dict(scale="d_model"),
    "heads split by viewing (B, L, D) as (B, H, L, Dh) directly (view as (B, L, H, Dh), then swap "
    "the L and head axes)": dict(split="wrong"),
    "heads merged without moving the head axis back (transpose (B, H, L, Dh) to (B, L, H, Dh) "
    "before reshaping to (B, L, D))": dict(merge="wrong"),
    "softmax over the queries (dim -2); each query's weights over the keys should sum to 1": dict(
        softmax_dim=-2
    ),
    "no output projection (the heads side by side still go through attn_out)": dict(project=False),
}


def _library_attention(x, wq, wk, wv, wo, n_heads, n_kv_heads, cos, sin) -> torch.Tensor:
    """minillada's Attention with these weights: the graduation reference."""
    D = x.shape[-1]
    config = preset(
        "tiny", d_model=D, n_heads=n_heads, n_kv_heads=n_kv_heads, max_sequence_length=x.shape[1]
    )
    attn = Attention(config).to(x.dtype)
    for layer, weight in zip(
        (attn.q_proj, attn.k_proj, attn.v_proj, attn.attn_out), (wq, wk, wv, wo), strict=True
    ):
        layer.weight.data = weight.clone()
    rotary = RotaryEmbedding(config.head_dim, config.rope_theta, config.max_sequence_length)
    with torch.no_grad():
        return attn(x, rotary, cos, sin)


def _attention_variants(*args) -> dict[str, torch.Tensor]:
    return {
        "right": _library_attention(*args),
        **{what: _attention_variant(*args, **flags) for what, flags in ATTENTION_MISTAKES.items()},
    }


def _attention_case(description: str, seed: int, B: int, L: int, H: int, Hkv: int) -> Case:
    """float64 weights at unit output scale, x (B, L, 64), rotate-half tables for L positions."""
    g, D = seeded(seed), 64
    Dh, f64 = D // H, torch.float64

    def weight(rows):  # (out, in), as nn.Linear stores it
        return torch.randn(rows, D, generator=g, dtype=f64) / D**0.5

    x = torch.randn(B, L, D, generator=g, dtype=f64)
    cos, sin = RotaryEmbedding(Dh, 10_000.0, L).tables(L, torch.device("cpu"))  # (L, Dh)
    return Case(
        description,
        (x, weight(D), weight(Hkv * Dh), weight(Hkv * Dh), weight(D), H, Hkv, cos, sin),
    )


def _named_mistake(expected: dict[str, torch.Tensor], got, hint: str, tol: float = 1e-10) -> None:
    """Compare with expected["right"]; on a mismatch, name the mistake whose output ``got`` is."""
    try:
        assert_same(expected["right"], got, atol=tol, rtol=tol)
    except ExerciseFailed as err:
        named = [
            what
            for what, value in expected.items()
            if what != "right"
            and torch.is_tensor(got)
            and got.shape == value.shape
            and torch.allclose(got.double(), value.double(), atol=tol, rtol=tol)
        ]
        found = f"Your output is what {named[0]} gives." if named else hint
        raise ExerciseFailed(f"{err}\n  {found}") from None


def _compare_attention(expected: dict[str, torch.Tensor], got) -> None:
    # A right answer and the library run the same float64 operations in another order: they agree
    # to ~1e-15 on values of order 1; each mistake above changes the output by order 0.1.
    _named_mistake(
        expected,
        got,
        "It matches none of the common mistakes: compare your steps with the list in the lesson.",
    )


def check_gqa_attention(fn: Callable) -> CheckResult:
    """Exercise 4.4: fn(x, wq, wk, wv, wo, n_heads, n_kv_heads, cos, sin) -> bidirectional
    attention with rotate-half RoPE and grouped-query heads, (B, L, D); compared in float64 with
    minillada's Attention holding the same weights, and matched against common mistakes by name."""
    cases = [  # description, seed, batch, positions, query heads, key/value heads
        _attention_case("multi-head: 4 query, 4 key/value heads, batch 2 of 8", 0, 2, 8, 4, 4),
        _attention_case("grouped-query: 4 query heads share 2 key/value heads", 1, 2, 8, 4, 2),
        _attention_case("grouped-query: 8 query heads in groups of 4, length 12", 2, 1, 12, 8, 2),
        _attention_case("multi-query: one key/value head serves all 4 query heads", 3, 2, 6, 4, 1),
        _attention_case("a single position: it attends to itself only", 4, 3, 1, 4, 2),
    ]  # fmt: skip
    return check(
        "Exercise 4.4",
        fn,
        _attention_variants,
        cases,
        "minillada.models.llada.Attention",
        compare=_compare_attention,
    )


# --- Exercise 4.5: the block, with its SwiGLU MLP ------------------------------------------------


@dataclass
class BlockParts:
    """What the learner's block gets: two norms, the attention half, and the MLP's three weights
    (tensors in nn.Linear's (out, in) layout, named as in the released checkpoint)."""

    attn_norm: RMSNorm  # the norm before attention
    attn: torch.nn.Module  # Attention: attn(h, rotary, cos, sin) -> (B, L, D)
    ff_norm: RMSNorm  # the norm before the MLP
    ff_proj: torch.Tensor  # (F, D): the gate branch
    up_proj: torch.Tensor  # (F, D): the linear branch
    ff_out: torch.Tensor  # (D, F): the down projection


def block_parts(block: LLaDABlock) -> BlockParts:
    """The parts of ``block`` the learner's function gets (not the block or its MLP module)."""
    return BlockParts(
        block.attn_norm,
        block.attn,
        block.ff_norm,
        block.ff_proj.weight.detach(),
        block.up_proj.weight.detach(),
        block.ff_out.weight.detach(),
    )


def _block_case(description: str, seed: int, batch: int, length: int, **overrides) -> Case:
    """A float64 block of the tiny preset with every weight random at a scale where both halves
    matter (not the training init, whose small outputs would hide a missing piece)."""
    g = seeded(seed)
    config = preset("tiny", **overrides)
    model = LLaDAModel(config, dtype=torch.float64, generator=g).requires_grad_(False)
    block = model.transformer.blocks[0]
    for name, p in block.named_parameters():
        if name.endswith("norm.weight"):  # two different gains, so the two norms differ
            p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
        else:  # (out, in): unit-scale outputs
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / p.shape[1] ** 0.5)
    x = torch.randn(batch, length, config.d_model, generator=g, dtype=torch.float64)  # (B, L, D)
    cos, sin = model.rotary.tables(length, torch.device("cpu"))  # (L, Dh)
    return Case(description, (x, block, model.rotary, cos, sin))


def _mlp_variants(block: LLaDABlock) -> dict[str, Callable]:
    """SwiGLU (the library's LLaDAMLP) and what common mistakes compute instead."""
    gate, up, down = block.ff_proj.weight, block.up_proj.weight, block.ff_out.weight
    silu = torch.nn.functional.silu
    return {
        "right": block.mlp,
        "SiLU on up_proj's branch, not on the gate (ff_proj is the gate, OLMo's name; up_proj the "
        "linear branch)": lambda h: (silu(h @ up.T) * (h @ gate.T)) @ down.T,
        "SiLU applied to the product of the two branches (it belongs on the gate alone)": (
            lambda h: silu((h @ gate.T) * (h @ up.T)) @ down.T
        ),
        "SiLU on both branches": lambda h: (silu(h @ gate.T) * silu(h @ up.T)) @ down.T,
        "no SiLU (a bilinear MLP)": lambda h: ((h @ gate.T) * (h @ up.T)) @ down.T,
        "GELU instead of SiLU on the gate": (
            lambda h: (torch.nn.functional.gelu(h @ gate.T) * (h @ up.T)) @ down.T
        ),
        "the linear branch up_proj left out (a two-matrix MLP)": (
            lambda h: silu(h @ gate.T) @ down.T
        ),
    }


def _block_variants(x, block, rotary, cos, sin) -> dict[str, torch.Tensor]:
    """The library's block (LLaDABlock.forward) and what common mistakes give."""

    def a(h):
        return block.attn(h, rotary, cos, sin)

    mlps = _mlp_variants(block)
    m, n1, n2 = mlps["right"], block.attn_norm, block.ff_norm
    x1 = x + a(n1(x))
    post_x1 = n1(x + a(x))
    stream = n1(x)
    stream = stream + a(stream)
    stream = n2(stream)
    variants = {
        "right": block(x, rotary, cos, sin),
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
    for what, mlp in mlps.items():
        if what != "right":
            variants[f"a right block around a wrong MLP: {what}"] = x1 + mlp(n2(x1))
    return variants


def _compare_block(expected: dict[str, torch.Tensor], got) -> None:
    # The reference and a right answer run the same float64 operations on the same weights, so
    # they agree to a few units of 1e-16 on values of order 1 (written in another order: ~1e-14);
    # every mistake above changes the output by order 0.1. 1e-10 sits between.
    _named_mistake(
        expected,
        got,
        "Follow the figure from the bottom up. In a LLaDA block each half reads a normalised copy "
        "of the stream and adds its output to the stream itself; the MLP multiplies SiLU of the "
        "gate branch with the linear branch, then projects down.",
    )


def check_llada_block(fn: Callable) -> CheckResult:
    """Exercise 4.5: fn(x, block, rotary, cos, sin) -> one LLaDA block's output, with the SwiGLU
    MLP written from the weights ``block.ff_proj``, ``block.up_proj``, ``block.ff_out`` and the
    given ``attn_norm``, ``attn``, ``ff_norm``; compared in float64 with LLaDABlock (and its
    LLaDAMLP) holding the same weights."""
    cases = [
        _block_case("tiny preset, 4 heads, batch 2 of 8 positions", 0, 2, 8),
        _block_case("grouped-query heads: 4 query, 2 key/value", 1, 2, 8, n_kv_heads=2),
        _block_case("one sequence of 16 positions", 2, 1, 16),
        _block_case("a single position", 3, 3, 1),
    ]

    def with_parts(x, block, rotary, cos, sin):
        return fn(x, block_parts(block), rotary, cos, sin)

    with torch.no_grad():
        return check(
            "Exercise 4.5",
            with_parts,
            _block_variants,
            cases,
            "minillada.models.llada.LLaDABlock and LLaDAMLP",
            compare=_compare_block,
        )
