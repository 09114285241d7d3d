"""Checkers for lesson 1 (notebooks/01_char_masked_diffusion.ipynb).

1.1 attention with RoPE, 1.2 the model, 1.3 the weight a mask pattern gets (reasoning), 1.4 the
loss by noise level (an experiment), 1.5 one training step, 1.6 the sampler. The machinery
exercises graduate against minillada's own modules (``SelfAttention`` and ``rope_tables``,
``TinyTransformer``, ``sampling.generate.sample``); when an answer disagrees, the checker also
tries the usual mistakes on the same input and names the one the answer matches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from types import MappingProxyType

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector

from minillada.data.char import get_batch
from minillada.diffusion.masking import forward_process
from minillada.diffusion.objectives import diffusion_loss
from minillada.exercises import (
    Case,
    CheckResult,
    ExerciseFailed,
    assert_same,
    check,
    diagnosing,
    run_experiment,
    seeded,
)
from minillada.models.rope import rope_tables
from minillada.models.tiny_transformer import SelfAttention, TinyTransformer, TinyTransformerConfig
from minillada.sampling.generate import sample
from minillada.sampling.primitives import num_transfer_tokens
from minillada.training.loop import (
    TrainConfig,
    loss_step,
    make_optimizer,
    new_train_state,
    train_loop,
)


def _diagnosing(reference: Callable, mistakes: list, atol: float, rtol: float):
    """``diagnosing`` comparing as assert_same with the tolerances."""
    return diagnosing(reference, mistakes, partial(assert_same, atol=atol, rtol=rtol))


# --- Exercise 1.1: bidirectional self-attention with RoPE -----------------------------------------

ROPE_THETA = 10_000.0


def library_attention(
    x: torch.Tensor, W_qkv: torch.Tensor, W_out: torch.Tensor, n_head: int
) -> torch.Tensor:
    """The reference of exercise 1.1: minillada's ``SelfAttention`` (RoPE tables from
    ``minillada.models.rope.rope_tables``, computed in float32 as LLaDA does) with the weights
    W_qkv (3D, D) and W_out (D, D). x (B, T, D) -> (B, T, D), in x's dtype."""
    B, T, D = x.shape
    cfg = TinyTransformerConfig(vocab_size=2, block_size=T, n_layer=1, n_head=n_head, n_embd=D)
    attn = SelfAttention(cfg).to(x.dtype)
    with torch.no_grad():
        attn.qkv.weight.copy_(W_qkv)
        attn.proj.weight.copy_(W_out)
        cos, sin = rope_tables(T, D // n_head, ROPE_THETA)
        return attn(x, cos.to(x.dtype), sin.to(x.dtype))


def _rope_variant(x, pairing="halves", sign=1.0, exponent="2j") -> torch.Tensor:
    """RoPE on x (..., T, Dh) in float64, right (the defaults) or with a typical mistake."""
    T, Dh = x.shape[-2], x.shape[-1]
    j = torch.arange(Dh // 2, dtype=torch.float64)
    inv_freq = 1.0 / ROPE_THETA ** ((2 * j if exponent == "2j" else j) / Dh)
    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # (T, Dh/2)
    c, s = angles.cos(), sign * angles.sin()
    if pairing == "halves":  # rotate-half: feature j with j + Dh/2, as LLaDA
        x1, x2 = x[..., : Dh // 2], x[..., Dh // 2 :]
        return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]  # adjacent pairs (2j, 2j + 1), the original RoPE paper's
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)


def _attention_variant(
    x, W_qkv, W_out, n_head, *, causal=False, scale="head", rotate="qk", softmax_dim=-1, **rope
) -> torch.Tensor:
    """Attention in float64, right (the defaults) or with one of the mistakes below."""
    x, W_qkv, W_out = x.double(), W_qkv.double(), W_out.double()
    B, T, D = x.shape
    Dh = D // n_head
    q, k, v = (x @ W_qkv.T).split(D, dim=-1)
    q, k, v = (z.view(B, T, n_head, Dh).transpose(1, 2) for z in (q, k, v))
    q = _rope_variant(q, **rope) if "q" in rotate else q
    k = _rope_variant(k, **rope) if "k" in rotate else k
    v = _rope_variant(v, **rope) if "v" in rotate else v
    scores = q @ k.transpose(-2, -1)
    scores = scores / {"head": math.sqrt(Dh), "width": math.sqrt(D), "none": 1.0}[scale]
    if causal:
        future = torch.ones(T, T, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    y = scores.softmax(dim=softmax_dim) @ v
    return y.transpose(1, 2).reshape(B, T, D) @ W_out.T


ATTENTION_MISTAKES = [
    ("a causal mask (position i sees only 0..i; here every position must see every other)",
     partial(_attention_variant, causal=True)),
    ("no 1/sqrt(Dh) scaling of the scores", partial(_attention_variant, scale="none")),
    ("scaling by 1/sqrt(D), the model width, instead of 1/sqrt(Dh), the head width",
     partial(_attention_variant, scale="width")),
    ("no RoPE at all (nothing tells the positions apart)", partial(_attention_variant, rotate="")),
    ("RoPE on the values too (only queries and keys are rotated)",
     partial(_attention_variant, rotate="qkv")),
    ("RoPE on the queries only", partial(_attention_variant, rotate="q")),
    ("RoPE on the keys only", partial(_attention_variant, rotate="k")),
    ("RoPE pairing adjacent features (2j, 2j + 1) instead of j with j + Dh/2 (rotate-half)",
     partial(_attention_variant, pairing="adjacent")),
    ("RoPE rotating the wrong way (the sine's sign flipped)",
     partial(_attention_variant, sign=-1.0)),
    ("RoPE frequencies theta^(-j/Dh) instead of theta^(-2j/Dh)",
     partial(_attention_variant, exponent="j")),
    ("a softmax over the queries (dim -2) instead of the keys",
     partial(_attention_variant, softmax_dim=-2)),
]  # fmt: skip


def _attention_case(seed: int, B: int, T: int, D: int, H: int) -> tuple:
    """x (B, T, D) and weights of scale 1/sqrt(D), float64: scores of order 1, so the softmax is
    neither uniform nor one-hot and every mistake above moves the output."""
    g = seeded(seed)
    x = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    W_qkv = torch.randn(3 * D, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    W_out = torch.randn(D, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    return x, W_qkv, W_out, H


def check_attention(fn: Callable) -> CheckResult:
    """Exercise 1.1: fn(x (B, T, D), W_qkv (3D, D), W_out (D, D), n_head) -> (B, T, D): one
    bidirectional self-attention layer with RoPE (theta 10,000, rotate-half pairs) on queries and
    keys. Graduates against minillada's SelfAttention on float64 inputs; 1e-4 leaves room for RoPE
    tables computed in float32 or float64, and none for any mistake in ATTENTION_MISTAKES."""
    reference, compare = _diagnosing(library_attention, ATTENTION_MISTAKES, atol=1e-4, rtol=1e-4)
    cases = [
        Case("one position (T = 1): the output is that position's value, projected by W_out",
             _attention_case(0, 1, 1, 8, 2)),
        Case("two positions, one head: position 0 must attend to position 1 as well, with scores "
             "q . k / sqrt(Dh)", _attention_case(1, 1, 2, 8, 1)),
        Case("8 positions, 2 heads of 8 features: RoPE rotates feature j with j + Dh/2 in every "
             "head, by angle position / 10000^(2j/Dh)", _attention_case(2, 2, 8, 16, 2)),
        Case("the lesson's sizes: 16 positions, 4 heads of 32 features, a batch of 2",
             _attention_case(3, 2, 16, 128, 4)),
    ]  # fmt: skip
    return check(
        "Exercise 1.1",
        fn,
        reference,
        cases,
        "minillada.models.tiny_transformer.SelfAttention",
        compare=compare,
    )


# --- Exercise 1.2: the model ---------------------------------------------------------------------

_MODEL_CONFIG = TinyTransformerConfig(vocab_size=12, block_size=16, n_layer=3, n_head=2, n_embd=16)


def _model_weights(seed: int, n_layer: int) -> dict:
    """A state dict of _MODEL_CONFIG with ``n_layer`` blocks, float64, every weight drawn at a
    scale where each part matters: matrices 1/sqrt(fan-in), norm weights 1 + 0.3 N(0, 1) (not all
    ones, so a missing or misplaced norm weight shows)."""
    cfg = replace(_MODEL_CONFIG, n_layer=max(n_layer, 1))
    names = TinyTransformer(cfg).state_dict()
    g = seeded(seed)
    w = {}
    for name, p in names.items():
        if name.startswith("blocks.") and int(name.split(".")[1]) >= n_layer:
            continue
        if "norm" in name:
            w[name] = 1.0 + 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64)
        elif name == "tok_emb.weight":
            w[name] = torch.randn(p.shape, generator=g, dtype=torch.float64)
        else:
            w[name] = torch.randn(p.shape, generator=g, dtype=torch.float64) / math.sqrt(p.shape[1])
    return w


def library_logits(ids, w, n_layer, n_head, attention=None) -> torch.Tensor:
    """The reference of exercise 1.2: minillada's TinyTransformer, in float64, with the weights
    ``w`` loaded (``n_layer`` blocks, none at all for 0). ``attention`` is ignored: the model has
    its own."""
    D = w["tok_emb.weight"].shape[1]
    cfg = replace(
        _MODEL_CONFIG,
        vocab_size=w["head.weight"].shape[0],
        n_embd=D,
        n_head=n_head,
        n_layer=max(n_layer, 1),
        block_size=max(ids.shape[1], 1),
    )
    model = TinyTransformer(cfg).double()
    model.blocks = nn.ModuleList(list(model.blocks)[:n_layer])
    model.load_state_dict(dict(w))
    with torch.no_grad():
        return model(ids)


def _model_variant(
    ids,
    w,
    n_layer,
    n_head,
    attention=None,
    *,
    final_norm=True,
    pre_norm=True,
    residual=True,
    swap_norms=False,
    same_block=False,
    act=F.silu,
    tied=False,
    norm_weights=True,
) -> torch.Tensor:
    """TinyTransformer written out, right (the defaults) or with one of the mistakes below."""

    def norm(x, name):
        return F.layer_norm(x, x.shape[-1:], w[name] if norm_weights else None)

    x = w["tok_emb.weight"][ids]
    for n in range(n_layer):
        p = "blocks.0." if same_block else f"blocks.{n}."
        first, second = ("mlp_norm", "attn_norm") if swap_norms else ("attn_norm", "mlp_norm")

        def attn(h, p=p):
            return library_attention(h, w[p + "attn.qkv.weight"], w[p + "attn.proj.weight"], n_head)

        def mlp(h, p=p):
            return act(h @ w[p + "mlp.fc.weight"].T) @ w[p + "mlp.proj.weight"].T

        for sub, norm_name in ((attn, first), (mlp, second)):
            if pre_norm:
                out = sub(norm(x, p + norm_name + ".weight"))
                x = x + out if residual else out
            else:
                x = norm(x + sub(x), p + norm_name + ".weight")
    if final_norm:
        x = norm(x, "final_norm.weight")
    return x @ (w["tok_emb.weight"] if tied else w["head.weight"]).T


MODEL_MISTAKES = [
    ("forgetting the final LayerNorm before the head", partial(_model_variant, final_norm=False)),
    ("post-norm blocks, norm(x + f(x)), instead of pre-norm x + f(norm(x))",
     partial(_model_variant, pre_norm=False)),
    ("blocks without residual connections (x = f(norm(x)) instead of x + f(norm(x)))",
     partial(_model_variant, residual=False)),
    ("the two norms of a block swapped (mlp_norm before attention, attn_norm before the MLP)",
     partial(_model_variant, swap_norms=True)),
    ("every layer using block 0's weights", partial(_model_variant, same_block=True)),
    ("GELU instead of SiLU in the MLP", partial(_model_variant, act=F.gelu)),
    ("ReLU instead of SiLU in the MLP", partial(_model_variant, act=F.relu)),
    ("a head tied to the embedding (tok_emb.weight) instead of head.weight",
     partial(_model_variant, tied=True)),
    ("LayerNorms without their weights", partial(_model_variant, norm_weights=False)),
]  # fmt: skip


def _model_case(seed: int, n_layer: int, B: int, T: int) -> tuple:
    ids = torch.randint(0, _MODEL_CONFIG.vocab_size, (B, T), generator=seeded(seed + 100))
    # read-only: the weights are the case's input, which no side may change
    w = MappingProxyType(_model_weights(seed, n_layer))
    return ids, w, n_layer, _MODEL_CONFIG.n_head, library_attention


def check_model(fn: Callable) -> CheckResult:
    """Exercise 1.2: fn(ids (B, T), w, n_layer, n_head, attention) -> logits (B, T, V), the
    TinyTransformer written over its weights by name (``w``: a state dict), with ``attention`` the
    layer of exercise 1.1 (the checker passes ``library_attention``, so a slip in 1.1 cannot fail
    1.2). Graduates against TinyTransformer with the same weights loaded, in float64."""
    reference, compare = _diagnosing(library_logits, MODEL_MISTAKES, atol=1e-9, rtol=1e-9)
    cases = [
        Case("no blocks (n_layer = 0): embedding, final LayerNorm, head", _model_case(0, 0, 2, 6)),
        Case("one block: x + attention(attn_norm(x)), then x + mlp(mlp_norm(x)); norm weights "
             "drawn at random, not all ones", _model_case(1, 1, 2, 6)),
        Case("three blocks, each with its own weights (blocks.0., blocks.1., blocks.2.)",
             _model_case(2, 3, 2, 10)),
        Case("one window of the full context, 16 ids", _model_case(3, 2, 1, 16)),
    ]  # fmt: skip
    return check(
        "Exercise 1.2",
        fn,
        reference,
        cases,
        "minillada.models.tiny_transformer.TinyTransformer",
        compare=compare,
    )


# --- Exercise 1.3: the weight the loss gives one mask pattern -----------------------------------

PATTERN_LENGTHS = (3, 6)


def pattern_weight(L: int, n: int) -> float:
    """1 / (n C(L, n)): the weight both of exercise 1.3's ways give one situation (a set S of n
    masked positions among L, and one position of S predicted). By the 1/t loss it is
    the integral over t of t^n (1 - t)^(L - n) / t, a Beta function, (n - 1)! (L - n)! / L!; by a
    random reveal order, the chance 1 / C(L, n) that the last n positions revealed are S, times the
    chance 1 / n that the named one comes first among them."""
    return 1.0 / (n * math.comb(L, n))


def _exact_pattern_weights(L: int) -> dict:
    return {n: (pattern_weight(L, n), pattern_weight(L, n)) for n in range(1, L + 1)}


def _pattern_hint(which: int, L: int, n: int, value: float) -> str:
    """What a wrong weight is, when it is a usual one."""
    near = lambda a: abs(value - a) <= 1e-6 * abs(a)  # noqa: E731
    if which == 0:
        if near(math.factorial(n) * math.factorial(L - n) / math.factorial(L + 1)):
            return ("That is the integral of the pattern's probability without the 1/t weight "
                    "of the loss.")  # fmt: skip
        if near(1.0 / n) or near(1.0 / (n + 1)):
            return ("The probability of the pattern at time t needs a factor for every position: "
                    "t for each of the n masked ones, and (1 - t) for each of the L - n visible "
                    "ones, which must stay visible.")  # fmt: skip
    else:
        if near(1.0 / math.comb(L, n)):
            return (
                "That is the chance that the n positions still masked are exactly S; the "
                "situation also needs the named position of S to be the next one revealed."
            )
        if near(1.0 / L):
            return "Count orders in which the masked set is exactly S at that moment, not only i."
    return ""


def _same_pattern_weights(expected: dict, got) -> None:
    if not isinstance(got, dict) or sorted(got) != sorted(expected):
        raise ExerciseFailed(
            f"expected a dict with the keys {sorted(expected)} (n = 1 .. L), got {got!r}"
        )
    L = max(expected)
    for n in sorted(expected):
        try:
            pair = [float(v) for v in got[n]]
        except (TypeError, ValueError):
            raise ExerciseFailed(
                f"n = {n}: expected a pair (weight by the 1/t loss, weight by reveal orders), "
                f"got {got[n]!r}"
            ) from None
        if len(pair) != 2:
            raise ExerciseFailed(f"n = {n}: expected a pair of numbers, got {got[n]!r}")
        for which, name in enumerate(("by the 1/t loss", "by reveal orders")):
            e, g = expected[n][which], pair[which]
            if not abs(g - e) <= 1e-6 * abs(e):
                raise ExerciseFailed(
                    f"L = {L}, n = {n}: the weight {name}: expected {e:.8g}, got {g:.8g}. "
                    + _pattern_hint(which, L, n, g)
                )


def check_pattern_weights(fn: Callable) -> CheckResult:
    """Exercise 1.3: fn(L) -> {n: (w_t, w_order)} for n = 1 .. L, where for one situation (a set
    S of n masked positions among L, and one position i of S to predict) w_t is the weight the
    1/t-weighted loss gives it (the integral over t of P(the masked set is exactly S | t) / t,
    epsilon ignored) and w_order the probability that a uniformly random reveal order, starting
    from all masks, reaches S with n masks left and reveals i next. Both are 1 / (n C(L, n)); the
    tolerance, 1e-6 relative, lets a numerical integral on a fine grid pass."""
    cases = [Case(f"a sequence of L = {L}", (L,)) for L in PATTERN_LENGTHS]
    return check(
        "Exercise 1.3",
        fn,
        _exact_pattern_weights,
        cases,
        "the exact weights, worked out by the checker",
        compare=_same_pattern_weights,
    )


# --- Exercise 1.4: where the loss comes from, noise level by noise level ------------------------

NOISE_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
_REFERENCE_DRAWS = 4  # the checker's own draws per noise level, for a tighter reference


@torch.no_grad()
def masked_cross_entropy_at(
    model, x0: torch.Tensor, mask_id: int, t: float, generator: torch.Generator
) -> tuple[float, float]:
    """The model's mean cross-entropy per masked character when every row of ``x0`` (B, L) is
    masked at noise level ``t``, over ``_REFERENCE_DRAWS`` draws of the masks; and its standard
    error, from the spread of the rows' own means (rows are independent, characters within a row
    need not be)."""
    device = next(model.parameters()).device
    row_means, counts = [], []
    for _ in range(_REFERENCE_DRAWS):
        ts = torch.full((x0.shape[0],), t)
        xt, masked, _ = forward_process(x0.cpu(), mask_id, t=ts, generator=generator)
        logits = model(xt.to(device)).double().cpu()  # (B, L, V)
        ce = F.cross_entropy(logits.transpose(1, 2), x0.cpu(), reduction="none")  # (B, L)
        n = masked.sum(dim=1)  # (B,)
        keep = n > 0
        row_means.append((ce * masked).sum(dim=1)[keep] / n[keep])
        counts.append(n[keep])
    row_means, counts = torch.cat(row_means), torch.cat(counts).double()
    mean = float((row_means * counts).sum() / counts.sum())  # per masked character
    # weighted rows: the standard error of a ratio of sums, by the delta method
    resid = (row_means - mean) * counts
    se = float(resid.pow(2).sum().sqrt() / counts.sum())
    return mean, se


def check_noise_level_experiment(
    fn: Callable, model, x0: torch.Tensor, mask_id: int
) -> CheckResult:
    """Exercise 1.4: fn(noise_levels) -> {t: the model's mean cross-entropy (nats) per masked
    character when every row of the batch is masked at level t}; then the outcome.

    The learner draws their own masks (one draw of the batch is enough), so the comparison is
    statistical: the checker measures each level on four draws of its own and accepts the
    learner's number within 5 standard errors of the difference. One draw has about twice the
    checker's standard error, so the difference has about sqrt(1 + 4) = 2.2 of them; 5 x 2.2 =
    11 of the checker's standard errors (about 0.1 nats at t = 0.1 on lesson 1's batch, less at
    higher t). A mean over all B * L positions is off by a factor t, bits instead of nats by
    1.44, and cross-entropies of the visible characters pull the low levels toward zero."""
    got = run_experiment("Exercise 1.4", fn, list(NOISE_LEVELS))
    if got is None:
        return CheckResult(False)
    generator = torch.Generator().manual_seed(1234)
    for t in NOISE_LEVELS:
        ref, se = masked_cross_entropy_at(model, x0, mask_id, t, generator)
        try:
            value = float(got[t])
        except (TypeError, ValueError):
            raise ExerciseFailed(
                f"Exercise 1.4: t = {t}: expected one number (nats per masked character), got "
                f"{got[t]!r}"
            ) from None
        tolerance = 5 * math.sqrt(1 + 4) * se
        if not abs(value - ref) <= tolerance:
            raise ExerciseFailed(
                f"Exercise 1.4: t = {t}: expected about {ref:.3f} nats per masked character "
                f"(within {tolerance:.3f}), got {value:.4g}. Mask every row at this t "
                "(forward_process with t=...), run the model, and average the cross-entropy over "
                "the masked positions only, dividing by how many there are."
            )
    values = [float(got[t]) for t in NOISE_LEVELS]
    plain = sum(values) / len(values)
    weighted = sum(t * v for t, v in zip(NOISE_LEVELS, values, strict=True)) / sum(NOISE_LEVELS)
    print(
        "Exercise 1.4 passed: your cross-entropies per masked character agree with the checker's "
        "draws within their statistical error: "
        + ", ".join(f"{v:.2f} (t={t})" for t, v in zip(NOISE_LEVELS, values, strict=True))
        + f" nats. Their plain mean is {plain:.3f}; their mean weighted by t is {weighted:.3f}."
    )
    return CheckResult(True)


# --- Exercise 1.5: one training step --------------------------------------------------------------

_STEP_CONFIG = TinyTransformerConfig(vocab_size=12, block_size=16, n_layer=2, n_head=2, n_embd=16)
_STEP_MASK_ID = 11  # ids 0-10 are "characters"
_STEP_TRAIN = TrainConfig(
    max_iters=4, batch_size=4, lr=3e-2, min_lr=3e-3, warmup_iters=2, grad_clip=1.0, seed=0
)


def _step_model(seed: int) -> TinyTransformer:
    # float64, so that the learner's arithmetic and the library's agree to ~1e-15 however the
    # learner orders the sums; 3e-2 is a large learning rate on purpose: the gradient norm
    # exceeds the clipping threshold of 1 in these steps, so a step without clipping differs.
    return TinyTransformer(_STEP_CONFIG, generator=torch.Generator().manual_seed(seed)).double()


def _step_data(seed: int) -> torch.Tensor:
    return torch.randint(0, _STEP_MASK_ID, (400,), generator=torch.Generator().manual_seed(seed))


def _library_steps(seed: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` iterations of minillada.training.loop.train_loop with lesson 1's step: the
    losses (steps,) and every weight afterwards, flattened."""
    model = _step_model(seed)
    cfg = replace(_STEP_TRAIN, max_iters=steps)
    state = new_train_state(model, cfg)
    state.generator.manual_seed(seed)
    data = _step_data(seed)

    def loss_fn(m, batch, generator):
        return diffusion_loss(m, batch, _STEP_MASK_ID, stratified=True, generator=generator)

    batches = partial(get_batch, data, cfg.batch_size, _STEP_CONFIG.block_size)
    state = train_loop(model, loss_step(batches, loss_fn), cfg, state, progress=False)
    losses = torch.tensor(state.history["loss"], dtype=torch.float64)
    return losses, parameters_to_vector(model.parameters()).detach()


def _learner_steps(fn: Callable, seed: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same iterations with the learner's training_step in place of the library's loop body,
    fed the same batches, learning rates and generator."""
    model = _step_model(seed)
    cfg = replace(_STEP_TRAIN, max_iters=steps)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(seed)
    data = _step_data(seed)
    model.train()
    losses = []
    for it in range(steps):
        batch = get_batch(data, cfg.batch_size, _STEP_CONFIG.block_size, generator)
        loss = fn(model, optimizer, batch, _STEP_MASK_ID, cfg.learning_rate(it), generator)
        losses.append(float(loss))
    return (
        torch.tensor(losses, dtype=torch.float64),
        parameters_to_vector(model.parameters()).detach(),
    )


def _same_training(expected: tuple, got: tuple) -> None:
    """Losses step by step, then the weights; each mismatch says which part of a step to look at."""
    exp_losses, exp_weights = expected
    got_losses, got_weights = got
    tol = dict(atol=1e-10, rtol=1e-8)  # float64 on both sides: ~1e-15 apart when equal
    for i, (e, g) in enumerate(zip(exp_losses.tolist(), got_losses.tolist(), strict=True)):
        if abs(e - g) > tol["atol"] + tol["rtol"] * abs(e):
            hint = (
                "The very first loss differs: draw the noise once per step with "
                "forward_process(batch, mask_id, stratified=True, generator=generator), run the "
                "model on x_t and take the 1/t-weighted loss of section 5 (the order of calls on "
                "the generator matters, and the step must draw nothing else from it)."
                if i == 0
                else "The first step agrees but a later one does not, so something carries over "
                "between steps: zero the gradients before backward (optimizer.zero_grad()), and "
                "set the learning rate of every parameter group (optimizer.param_groups) to lr."
            )
            raise ExerciseFailed(f"loss of step {i + 1}: expected {e!r}, got {g!r}. {hint}")
    try:
        assert_same(exp_weights, got_weights, **tol, path="weights after the steps")
    except ExerciseFailed as err:
        raise ExerciseFailed(
            f"{err}\nThe losses agree but the weights do not: after backward, clip the global "
            "gradient norm at 1 (torch.nn.utils.clip_grad_norm_), then optimizer.step(), "
            "with the learning rate set to lr."
        ) from None


def check_training_step(fn: Callable) -> CheckResult:
    """Exercise 1.5: fn(model, optimizer, batch, mask_id, lr, generator) -> the loss (a float),
    having done one full iteration: learning rate, zeroed gradients, noise, loss, backward,
    clipping at 1, update. Graduates against minillada.training.loop.train_loop."""
    cases = [
        Case("one step from a fresh model", (0, 1)),
        Case("four steps: warmup, then cosine decay of the learning rate", (0, 4)),
        Case("three steps from another seed (other weights, batches and noise)", (7, 3)),
    ]
    return check(
        "Exercise 1.5",
        lambda seed, steps: _learner_steps(fn, seed, steps),
        _library_steps,
        cases,
        "minillada.training.loop.train_loop with lesson 1's step",
        compare=_same_training,
    )


# --- Exercise 1.6: the sampler -------------------------------------------------------------------

_SAMPLER_CONFIG = TinyTransformerConfig(
    vocab_size=12, block_size=16, n_layer=1, n_head=2, n_embd=16
)
_SAMPLER_MASK_ID = 11  # ids 0-10 are "characters"


def _sampler_model() -> TinyTransformer:
    """A small random model whose predictions are far from uniform (weights 10x GPT-2's scale),
    so that confidence order and random order reveal different positions."""
    model = TinyTransformer(_SAMPLER_CONFIG, generator=seeded(5))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(10.0)
    return model.eval()


class _CopiesAndLovesTheMask(nn.Module):
    """The small model, plus a strong preference for the mask token at every position and, where a
    character is visible, for that character: a sampler that proposes the mask, or that lets
    already revealed positions compete, goes wrong at once on it."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.config = base.config

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.base(ids)
        bonus = F.one_hot(ids, logits.shape[-1]).to(logits.dtype) * 12.0  # own token, or the mask
        bonus[..., _SAMPLER_MASK_ID] += 6.0
        return logits + bonus


def library_sample(model, mask_id, length, steps, order="random", seed=0) -> tuple:
    """The reference of exercise 1.6: minillada.sampling.generate.sample, one sequence, with the
    canvas recorded after every step. Returns (final (1, length), [steps + 1 canvases])."""
    out = sample(model, mask_id, length=length, steps=steps, order=order,
                 generator=torch.Generator().manual_seed(seed), record=True)  # fmt: skip
    return out.tokens, [c.cpu() for c in out.canvases]


def _schedule_text(length: int, steps: int) -> str:
    counts = num_transfer_tokens(torch.tensor([length]), steps)[0].tolist()
    return f"{length} over {steps} steps: {', '.join(map(str, counts))}"


def _check_canvases(expected: tuple, got, length: int, steps: int, mask_id: int) -> None:
    """The rules a sampler must keep, whatever its random numbers, then token for token."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ExerciseFailed(f"expected a pair (x, canvases), got {type(got).__name__}")
    x, canvases = got
    if not isinstance(canvases, (list, tuple)) or len(canvases) != steps + 1:
        n = len(canvases) if isinstance(canvases, (list, tuple)) else type(canvases).__name__
        raise ExerciseFailed(
            f"canvases: expected a list of {steps + 1} canvases (the start, then one after each "
            f"of the {steps} steps), got {n}"
        )
    canvases = [torch.as_tensor(c).cpu().reshape(1, -1) for c in canvases]
    if any(c.shape[1] != length for c in canvases):
        raise ExerciseFailed(f"canvases: expected every canvas to hold {length} ids")
    if not (canvases[0] == mask_id).all():
        raise ExerciseFailed("canvases[0]: expected the start, every position masked")
    counts = num_transfer_tokens(torch.tensor([length]), steps)[0].tolist()
    for k in range(1, steps + 1):
        before, after = canvases[k - 1][0], canvases[k][0]
        changed = (before != mask_id) & (after != before)
        if changed.any():
            p = int(changed.nonzero()[0])
            raise ExerciseFailed(
                f"step {k} changed position {p}, which an earlier step had revealed "
                f"({int(before[p])} -> {int(after[p])}): expected a revealed character never to "
                "change; only masked positions may be candidates."
            )
        revealed = int(((before == mask_id) & (after != mask_id)).sum())
        if revealed != counts[k - 1]:
            raise ExerciseFailed(
                f"step {k} revealed {revealed} positions, expected {counts[k - 1]} "
                f"({_schedule_text(length, steps)}: as even as possible, the remainder on the "
                "first steps). If you picked the right number, some were given the mask id "
                "itself as their character (never propose the mask), or were positions revealed "
                "before (rule them out)."
            )
    try:
        x = torch.as_tensor(x).cpu().reshape(1, -1)
    except (TypeError, RuntimeError):
        raise ExerciseFailed(f"x: expected the final canvas (1, {length}), got {x!r}") from None
    if not torch.equal(x, canvases[-1]):
        raise ExerciseFailed("x: expected the final canvas, the last of canvases")
    exp_canvases = expected[1]
    for k in range(1, steps + 1):
        if not torch.equal(canvases[k], exp_canvases[k]):
            before = exp_canvases[k - 1][0]
            where_exp = ((before == mask_id) & (exp_canvases[k][0] != mask_id)).nonzero()
            where_got = ((before == mask_id) & (canvases[k][0] != mask_id)).nonzero()
            what = (
                "the same positions, other characters: draw the candidates with one "
                "gumbel_argmax(logits, 1.0, generator) call per step, on logits whose mask "
                "column is -inf"
                if torch.equal(where_exp, where_got)
                else f"positions {where_got.flatten().tolist()} instead of "
                f"{where_exp.flatten().tolist()}: in confidence order the score is the "
                "probability softmax(logits) gives the candidate (most confident first); in "
                "random order one torch.rand(x.shape, generator=generator, dtype=torch.float64) "
                "per step, drawn after the candidates"
            )
            raise ExerciseFailed(
                f"the rules hold, but step {k} differs from minillada's sampler with the same "
                f"generator: it revealed {what}.\n  expected {exp_canvases[k][0].tolist()}\n"
                f"  got      {canvases[k][0].tolist()}"
            )


def check_sampler(fn: Callable) -> CheckResult:
    """Exercise 1.6: fn(model, mask_id, length, steps, order, generator) -> (x (1, length),
    canvases: the steps + 1 canvases from all masks to x). Checks the rules on every step (only
    masked positions change, the schedule's count revealed, nothing left masked), then token for
    token against minillada.sampling.generate.sample with the same seed."""
    model = _sampler_model()
    tricky = _CopiesAndLovesTheMask(model)
    M = _SAMPLER_MASK_ID
    cases = [
        Case("random order, 12 positions in 4 steps (3 per step)", (model, M, 12, 4, "random")),
        Case("confidence order, 12 positions in 4 steps", (model, M, 12, 4, "confidence")),
        Case("random order, 10 positions in 4 steps (3, 3, 2, 2)", (model, M, 10, 4, "random")),
        Case("confidence order, 16 positions in 16 steps (one per step)",
             (model, M, 16, 16, "confidence")),
        Case("confidence order on a model that loves the mask token and is surest where a "
             "character is already revealed", (tricky, M, 12, 6, "confidence")),
        Case("random order on the same model", (tricky, M, 12, 3, "random")),
    ]  # fmt: skip
    current: dict = {}

    def learner(model, mask_id, length, steps, order):
        current.update(length=length, steps=steps, mask_id=mask_id)
        with torch.no_grad():
            return fn(model, mask_id, length, steps, order, torch.Generator().manual_seed(0))

    def compare(expected, got):
        _check_canvases(expected, got, current["length"], current["steps"], current["mask_id"])

    return check(
        "Exercise 1.6",
        learner,
        partial(library_sample, seed=0),
        cases,
        "minillada.sampling.generate.sample",
        compare=compare,
    )
