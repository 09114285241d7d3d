"""Lesson 1's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F
from checker_cases import assert_fails, ids, solution_and_stub_tests

from minillada.checkpoints.shipped import load_char_shakespeare
from minillada.diffusion.masking import forward_process
from minillada.diffusion.objectives import masked_diffusion_loss
from minillada.exercises import lesson1
from minillada.sampling.primitives import gumbel_argmax

# --- the solutions, as in notebooks/solutions/01_char_masked_diffusion.ipynb --------------------


def rope(x, theta=10_000.0):
    # x: (B, H, T, Dh). Rotate feature pairs (j, j + Dh/2) by angle pos / theta^(2j/Dh).
    T, Dh = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, Dh, 2).float() / Dh)  # (Dh/2,)
    angles = torch.outer(torch.arange(T).float(), inv_freq)  # (T, Dh/2)
    cos, sin = angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)  # (T, Dh)
    x1, x2 = x[..., : Dh // 2], x[..., Dh // 2 :]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def attention(x, W_qkv, W_out, n_head):
    B, T, D = x.shape
    q, k, v = (x @ W_qkv.T).split(D, dim=-1)  # 3 x (B, T, D)
    q, k, v = (z.view(B, T, n_head, D // n_head).transpose(1, 2) for z in (q, k, v))
    q, k = rope(q), rope(k)  # (B, H, T, Dh), values not rotated
    scores = q @ k.transpose(-2, -1) / math.sqrt(D // n_head)  # (B, H, T, T): no causal mask
    y = scores.softmax(dim=-1) @ v  # (B, H, T, Dh)
    return y.transpose(1, 2).reshape(B, T, D) @ W_out.T


def transformer(ids, w, n_layer, n_head, attention):
    def norm(x, name):
        return F.layer_norm(x, x.shape[-1:], w[name])

    x = w["tok_emb.weight"][ids]  # (B, T) -> (B, T, D)
    for n in range(n_layer):
        p = f"blocks.{n}."
        h = norm(x, p + "attn_norm.weight")
        x = x + attention(h, w[p + "attn.qkv.weight"], w[p + "attn.proj.weight"], n_head)
        h = norm(x, p + "mlp_norm.weight")
        x = x + F.silu(h @ w[p + "mlp.fc.weight"].T) @ w[p + "mlp.proj.weight"].T
    x = norm(x, "final_norm.weight")
    return x @ w["head.weight"].T  # (B, T, V)


def pattern_weights(L):
    t = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    orders = list(itertools.permutations(range(L)))  # every reveal order, equally likely
    weights = {}
    for n in range(1, L + 1):
        # the 1/t loss: P(exactly S masked | t) / t = t^n (1 - t)^(L - n) / t, integrated over t
        w_t = torch.trapezoid(t ** (n - 1) * (1 - t) ** (L - n), t).item()
        # reveal orders: the last n revealed are S, and position 0 is the first of them
        hits = sum(set(o[L - n :]) == set(range(n)) and o[L - n] == 0 for o in orders)
        weights[n] = (w_t, hits / len(orders))
    return weights


@torch.no_grad()
def cross_entropy_by_noise_level(levels, model, batch, mask_id):
    # in the notebook the model, the batch and the mask id are the lesson's `trained`, `batch`
    # and `tok.mask_id`; here they are arguments, bound by the EXERCISES table below
    g = torch.Generator().manual_seed(0)
    result = {}
    for t in levels:
        xt, masked, _ = forward_process(batch, mask_id, t=torch.full((len(batch),), t), generator=g)
        ce = F.cross_entropy(model(xt).transpose(1, 2), batch, reduction="none")  # (B, L)
        result[t] = ce[masked].mean().item()
    return result


def training_step(model, optimizer, batch, mask_id, lr, generator):
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad()
    xt, masked, p = forward_process(batch, mask_id, stratified=True, generator=generator)
    loss = masked_diffusion_loss(model(xt), batch, masked, p)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


@torch.no_grad()
def sample_by_hand(model, mask_id, length, steps, order, generator):
    x = torch.full((1, length), mask_id)
    per_step = [length // steps + (k < length % steps) for k in range(steps)]
    canvases = [x.clone()]
    for k in range(steps):
        logits = model(x).double()
        logits[..., mask_id] = float("-inf")  # the mask is never a clean character
        candidates = gumbel_argmax(logits, 1.0, generator)  # (1, L)
        if order == "confidence":
            score = logits.softmax(-1).gather(-1, candidates[..., None])[..., 0]
        else:
            score = torch.rand(x.shape, generator=generator, dtype=torch.float64)
        score = torch.where(x == mask_id, score, float("-inf"))  # revealed: never again
        top = score[0].topk(per_step[k]).indices
        x = x.clone()
        x[0, top] = candidates[0, top]
        canvases.append(x)
    return x, canvases


# --- the stubs, as in notebooks/01_char_masked_diffusion.ipynb ----------------------------------


def attention_stub(x, W_qkv, W_out, n_head):
    raise NotImplementedError("Exercise 1.1: write bidirectional self-attention with RoPE")


def transformer_stub(ids, w, n_layer, n_head, attention):
    raise NotImplementedError("Exercise 1.2: write the model over its weights")


def pattern_weights_stub(L):
    raise NotImplementedError("Exercise 1.3: work out the two weights")


def cross_entropy_by_noise_level_stub(levels, *lesson_objects):
    raise NotImplementedError("Exercise 1.4: measure the loss at each noise level")


def training_step_stub(model, optimizer, batch, mask_id, lr, generator):
    raise NotImplementedError("Exercise 1.5: write one training step")


def sample_by_hand_stub(model, mask_id, length, steps, order, generator):
    raise NotImplementedError("Exercise 1.6: write the sampler")


def _shipped_model_and_batch():
    model, _ = load_char_shakespeare("cpu")
    # 8 rows: the checker's tolerance scales with its own standard error; 4x cheaper than 32
    batch = torch.randint(0, 65, (8, 128), generator=torch.Generator().manual_seed(8))
    return model, batch


_MODEL, _BATCH = _shipped_model_and_batch()


def check_noise_levels(fn):
    return lesson1.check_noise_level_experiment(fn, _MODEL, _BATCH, 65)


def with_lesson_objects(fn):
    return lambda levels: fn(levels, _MODEL, _BATCH, 65)


EXERCISES = [
    ("1.1", lesson1.check_attention, attention, attention_stub),
    ("1.2", lesson1.check_model, transformer, transformer_stub),
    ("1.3", lesson1.check_pattern_weights, pattern_weights, pattern_weights_stub),
    (
        "1.4",
        check_noise_levels,
        with_lesson_objects(cross_entropy_by_noise_level),
        with_lesson_objects(cross_entropy_by_noise_level_stub),
    ),
    ("1.5", lesson1.check_training_step, training_step, training_step_stub),
    ("1.6", lesson1.check_sampler, sample_by_hand, sample_by_hand_stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- Exercise 1.1: attention with RoPE -----------------------------------------------------------


def attention_with(causal=False, scale="head", rotate="qk", pairing="halves", sign=1.0,
                   exponent="2j", softmax_dim=-1):  # fmt: skip
    """The solution with one typical mistake, written as a learner would (float32 RoPE tables)."""

    def rope_(x):
        T, Dh = x.shape[-2], x.shape[-1]
        j = torch.arange(Dh // 2).float()
        inv_freq = 1.0 / 10_000.0 ** ((2 * j if exponent == "2j" else j) / Dh)
        angles = torch.outer(torch.arange(T).float(), inv_freq)
        c, s = angles.cos(), sign * angles.sin()
        if pairing == "halves":
            x1, x2 = x[..., : Dh // 2], x[..., Dh // 2 :]
            return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)

    def attn(x, W_qkv, W_out, n_head):
        B, T, D = x.shape
        q, k, v = (x @ W_qkv.T).split(D, dim=-1)
        q, k, v = (z.view(B, T, n_head, D // n_head).transpose(1, 2) for z in (q, k, v))
        q, k, v = (rope_(z) if n in rotate else z for n, z in zip("qkv", (q, k, v), strict=True))
        s = q @ k.transpose(-2, -1) / {"head": math.sqrt(D // n_head), "width": math.sqrt(D),
                                       "none": 1.0}[scale]  # fmt: skip
        if causal:
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        return (s.softmax(dim=softmax_dim) @ v).transpose(1, 2).reshape(B, T, D) @ W_out.T

    return attn


def rope_in_float64(x, W_qkv, W_out, n_head):  # right, with float64 tables: must pass as well
    return lesson1._attention_variant(x, W_qkv, W_out, n_head)


def test_attention_with_float64_rope_tables_passes():
    assert lesson1.check_attention(rope_in_float64)


ATTENTION_MISTAKES = [
    ("causal_mask", dict(causal=True), 2, "a causal mask"),
    ("no_scaling", dict(scale="none"), 2, r"no 1/sqrt\(Dh\) scaling"),
    ("scaled_by_width", dict(scale="width"), 3, r"scaling by 1/sqrt\(D\), the model width"),
    ("no_rope", dict(rotate=""), 2, "no RoPE at all"),
    ("rope_on_values", dict(rotate="qkv"), 2, "RoPE on the values too"),
    ("rope_on_queries_only", dict(rotate="q"), 2, "RoPE on the queries only"),
    ("adjacent_pairs", dict(pairing="adjacent"), 2, "RoPE pairing adjacent features"),
    ("rotates_the_wrong_way", dict(sign=-1.0), 2, "RoPE rotating the wrong way"),
    ("wrong_frequencies", dict(exponent="j"), 2, r"RoPE frequencies theta\^\(-j/Dh\)"),
    ("softmax_over_queries", dict(softmax_dim=-2), 2, "a softmax over the queries"),
]


@pytest.mark.parametrize(
    "kwargs, case, named",
    [m[1:] for m in ATTENTION_MISTAKES],
    ids=[m[0] for m in ATTENTION_MISTAKES],
)
def test_attention_mistake_fails_and_is_named(kwargs, case, named):
    message = assert_fails(
        lesson1.check_attention, attention_with(**kwargs), "1.1", rf"case {case}/4 \("
    )
    assert f"Your result is what {named}".replace("\\", "") in message.replace("\\", "")


def test_attention_wrong_projection_fails_on_one_position():
    def forgets_output_projection(x, W_qkv, W_out, n_head):
        return attention(x, W_qkv, torch.eye(x.shape[-1], dtype=x.dtype), n_head)

    assert_fails(lesson1.check_attention, forgets_output_projection, "1.1", r"case 1/4 \(one pos")


def test_attention_variants_graduate_against_the_library():
    x, W_qkv, W_out, H = lesson1._attention_case(9, 2, 12, 32, 4)
    ours, library = (
        lesson1._attention_variant(x, W_qkv, W_out, H),
        lesson1.library_attention(x, W_qkv, W_out, H),
    )
    torch.testing.assert_close(ours, library, atol=1e-5, rtol=1e-5)


# --- Exercise 1.2: the model ---------------------------------------------------------------------


MODEL_MISTAKES = [
    ("forgets_final_norm", dict(final_norm=False), 1, "forgetting the final LayerNorm"),
    ("post_norm", dict(pre_norm=False), 2, "post-norm blocks"),
    ("no_residual", dict(residual=False), 2, "blocks without residual connections"),
    ("swapped_norms", dict(swap_norms=True), 2, "the two norms of a block swapped"),
    ("same_block_every_layer", dict(same_block=True), 3, "every layer using block 0's weights"),
    ("gelu", dict(act=F.gelu), 2, "GELU instead of SiLU"),
    ("tied_head", dict(tied=True), 1, "a head tied to the embedding"),
    ("norms_without_weights", dict(norm_weights=False), 1, "LayerNorms without their weights"),
]


@pytest.mark.parametrize(
    "kwargs, case, named", [m[1:] for m in MODEL_MISTAKES], ids=[m[0] for m in MODEL_MISTAKES]
)
def test_model_mistake_fails_and_is_named(kwargs, case, named):
    def mistake(ids, w, n_layer, n_head, attention):
        return lesson1._model_variant(ids, w, n_layer, n_head, attention, **kwargs)

    message = assert_fails(lesson1.check_model, mistake, "1.2", rf"case {case}/4 \(")
    assert f"Your result is what {named}" in message


def test_model_variant_graduates_against_the_library():
    args = lesson1._model_case(7, 2, 2, 9)
    torch.testing.assert_close(
        lesson1._model_variant(*args), lesson1.library_logits(*args), atol=1e-10, rtol=1e-10
    )


def test_model_weights_are_read_only():
    def changes_the_weights(ids, w, n_layer, n_head, attention):
        w["head.weight"] = w["head.weight"] * 0
        return transformer(ids, w, n_layer, n_head, attention)

    assert_fails(lesson1.check_model, changes_the_weights, "1.2", r"your function raised TypeError")


# --- Exercise 1.3: the weight of a mask pattern --------------------------------------------------


def pattern_weights_with(w_t=None, w_order=None):
    def fn(L):
        right = pattern_weights(L)
        return {
            n: (w_t(L, n) if w_t else a, w_order(L, n) if w_order else b)
            for n, (a, b) in right.items()
        }

    return fn


PATTERN_MISTAKES = [
    ("without_one_over_t", pattern_weights_with(
        w_t=lambda L, n: math.factorial(n) * math.factorial(L - n) / math.factorial(L + 1)),
     "without the 1/t weight"),
    ("forgets_the_visible_positions", pattern_weights_with(w_t=lambda L, n: 1 / n),
     r"\(1 - t\) for each of the L - n visible"),
    ("only_the_masked_set", pattern_weights_with(w_order=lambda L, n: 1 / math.comb(L, n)),
     "also needs the named position"),
    ("sampled_orders", pattern_weights_with(w_order=lambda L, n: 1.01 / (n * math.comb(L, n))),
     "by reveal orders: expected"),
]  # fmt: skip


@pytest.mark.parametrize(
    "mistake, match", [m[1:] for m in PATTERN_MISTAKES], ids=[m[0] for m in PATTERN_MISTAKES]
)
def test_pattern_weights_mistake_fails(mistake, match):
    message = assert_fails(lesson1.check_pattern_weights, mistake, "1.3", r"case 1/2 \(a seq")
    assert re.search(match, message), message


def test_pattern_weights_keys_must_be_one_to_L():
    assert_fails(
        lesson1.check_pattern_weights,
        lambda L: {n: (1.0, 1.0) for n in range(L)},
        "1.3",
        r"case 1/2 .*\n.*expected a dict with the keys \[1, 2, 3\]",
    )


def test_the_stub_does_not_print_the_formula(capsys):
    lesson1.check_pattern_weights(pattern_weights_stub)
    assert "C(L" not in capsys.readouterr().out


# --- Exercise 1.4: the loss at each noise level --------------------------------------------------


def in_bits(levels, *objects):  # bits instead of nats
    return {t: v / math.log(2) for t, v in cross_entropy_by_noise_level(levels, *objects).items()}


@torch.no_grad()
def over_every_position(levels, model, batch, mask_id):  # visible characters included
    g = torch.Generator().manual_seed(0)
    result = {}
    for t in levels:
        xt, _, _ = forward_process(batch, mask_id, t=torch.full((len(batch),), t), generator=g)
        ce = F.cross_entropy(model(xt).transpose(1, 2), batch, reduction="none")
        result[t] = ce.mean().item()
    return result


@torch.no_grad()
def divided_by_every_position(levels, model, batch, mask_id):  # the sum / (B * L): t times smaller
    g = torch.Generator().manual_seed(0)
    result = {}
    for t in levels:
        xt, masked, _ = forward_process(batch, mask_id, t=torch.full((len(batch),), t), generator=g)
        ce = F.cross_entropy(model(xt).transpose(1, 2), batch, reduction="none")
        result[t] = ((ce * masked).sum() / ce.numel()).item()
    return result


@pytest.mark.parametrize(
    "mistake", [in_bits, over_every_position, divided_by_every_position], ids=lambda f: f.__name__
)
def test_noise_level_mistake_fails(mistake):
    message = assert_fails(check_noise_levels, with_lesson_objects(mistake), "1.4", r"t = 0\.\d: ")
    assert "masked positions only" in message


def test_noise_level_outcome_compares_the_two_averages(capsys):
    assert check_noise_levels(with_lesson_objects(cross_entropy_by_noise_level))
    out = capsys.readouterr().out
    assert "Their plain mean is" in out and "their mean weighted by t is" in out
    assert "rises" not in out  # the checker measures; the discussion cell interprets


def test_noise_level_keys_must_match():
    assert_fails(check_noise_levels, lambda levels: {0.5: 1.0}, "1.4", r"expected a dict")


# --- Exercise 1.5: training_step -----------------------------------------------------------------


def step_with(zero_grad=True, set_lr=True, weighted=True, clip="before"):
    """training_step with one of its six parts left out or misplaced, as a mistake would."""

    def step(model, optimizer, batch, mask_id, lr, generator):
        if set_lr:
            for group in optimizer.param_groups:
                group["lr"] = lr
        if zero_grad:
            optimizer.zero_grad()
        xt, masked, p = forward_process(batch, mask_id, stratified=True, generator=generator)
        weight = p if weighted else torch.ones_like(p)  # no 1/t when unweighted
        loss = masked_diffusion_loss(model(xt), batch, masked, weight)
        loss.backward()
        if clip == "before":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if clip == "after":  # too late: the update has used the unclipped gradient
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        return loss.item()

    return step


forgets_zero_grad = step_with(zero_grad=False)
forgets_clipping = step_with(clip=None)
clips_after_the_step = step_with(clip="after")
ignores_lr = step_with(set_lr=False)  # keeps the optimizer's own learning rate
unweighted_loss = step_with(weighted=False)
for name in (
    "forgets_zero_grad",
    "forgets_clipping",
    "clips_after_the_step",
    "ignores_lr",
    "unweighted_loss",
):
    globals()[name].__name__ = name


STEP_MISTAKES = [
    (forgets_zero_grad, r"case 2/3 .*\n.*loss of step [23]: .*zero the gradients"),
    (forgets_clipping, r"case 1/3 .*\n.*weights after the steps(.*\n)*.*clip the global"),
    (clips_after_the_step, r"case 1/3 .*\n.*weights after the steps(.*\n)*.*clip the global"),
    (ignores_lr, r"case 1/3 .*\n.*weights after the steps"),
    (unweighted_loss, r"case 1/3 .*\n.*loss of step 1: .*1/t-weighted loss"),
]


@pytest.mark.parametrize("mistake, match", STEP_MISTAKES, ids=ids(STEP_MISTAKES))
def test_training_step_mistake_fails(mistake, match):
    assert_fails(lesson1.check_training_step, mistake, "1.5", match)


# --- Exercise 1.6: the sampler -------------------------------------------------------------------


def sampler_with(mask_inf=True, rule_out_revealed=True, schedule="even", least=False,
                 confidence="candidate", draw_order="candidates_first"):  # fmt: skip
    """The solution with one typical mistake."""

    @torch.no_grad()
    def fn(model, mask_id, length, steps, order, generator):
        x = torch.full((1, length), mask_id)
        if schedule == "even":
            per_step = [length // steps + (k < length % steps) for k in range(steps)]
        elif schedule == "floor":  # length // steps every step: the remainder is never revealed
            per_step = [length // steps] * steps
        else:  # the remainder on the last steps
            per_step = [length // steps + (k >= steps - length % steps) for k in range(steps)]
        canvases = [x.clone()]
        for k in range(steps):
            logits = model(x).double()
            if mask_inf:
                logits[..., mask_id] = float("-inf")
            if order == "random" and draw_order == "scores_first":
                score = torch.rand(x.shape, generator=generator, dtype=torch.float64)
            candidates = gumbel_argmax(logits, 1.0, generator)
            if order == "confidence":
                p = logits.softmax(-1)
                score = (
                    p.gather(-1, candidates[..., None])[..., 0]
                    if confidence == "candidate"
                    else p.max(-1).values
                )
            elif draw_order == "candidates_first":
                score = torch.rand(x.shape, generator=generator, dtype=torch.float64)
            if rule_out_revealed:
                score = torch.where(x == mask_id, score, float("-inf"))
            top = score[0].topk(per_step[k], largest=not least).indices
            if least:  # the least confident: ruled-out positions must then be +inf
                s = torch.where(x == mask_id, score, float("inf"))
                top = s[0].topk(per_step[k], largest=False).indices
            x = x.clone()
            x[0, top] = candidates[0, top]
            canvases.append(x)
        return x, canvases

    return fn


SAMPLER_MISTAKES = [
    ("proposes_the_mask", dict(mask_inf=False), r"case 1/6 .*\n.*step \d revealed \d+ positions, "
     r"expected 3 .*never propose the mask"),
    ("reveals_revealed_positions", dict(rule_out_revealed=False),
     r"case \d/6 .*\n.*step \d (changed position|revealed \d+ positions)"),
    ("floor_schedule", dict(schedule="floor"),
     r"case 3/6 .*\n.*step 1 revealed 2 positions, expected 3 \(10 over 4 steps: 3, 3, 2, 2"),
    ("remainder_last", dict(schedule="last"),
     r"case 3/6 .*\n.*step 1 revealed 2 positions, expected 3"),
    ("least_confident_first", dict(least=True),
     r"case 1/6 .*\n.*the rules hold, but step 1 differs .*revealed positions"),
    ("confidence_of_the_best_token", dict(confidence="max"),
     r"case 2/6 .*\n.*the rules hold, but step \d differs"),
    ("scores_drawn_before_candidates", dict(draw_order="scores_first"),
     r"case 1/6 .*\n.*the rules hold, but step 1 differs"),
]  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, match", [m[1:] for m in SAMPLER_MISTAKES], ids=[m[0] for m in SAMPLER_MISTAKES]
)
def test_sampler_mistake_fails(kwargs, match):
    assert_fails(lesson1.check_sampler, sampler_with(**kwargs), "1.6", match)


def test_sampler_must_return_every_canvas():
    def final_only(model, mask_id, length, steps, order, generator):
        x, canvases = sample_by_hand(model, mask_id, length, steps, order, generator)
        return x, canvases[1:]

    assert_fails(
        lesson1.check_sampler, final_only, "1.6", r"case 1/6 .*\n.*expected a list of 5 canvases"
    )


def test_sampler_cases_tell_the_orders_apart():
    """Random and confidence order reveal different positions on the checker's model, and the
    tricky model really punishes the two rule breaks: else the cases would test nothing."""
    model, M = lesson1._sampler_model(), lesson1._SAMPLER_MASK_ID
    a = lesson1.library_sample(model, M, 12, 4, "random")[1][1]
    b = lesson1.library_sample(model, M, 12, 4, "confidence")[1][1]
    assert not torch.equal(a == M, b == M)
