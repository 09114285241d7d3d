"""Lesson 4's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from checker_cases import assert_fails, ids, solution_and_stub_tests

from minillada.data.bpe import train_bpe_fast
from minillada.exercises import ExerciseFailed, lesson4

# --- the solutions, as in notebooks/solutions/04_subwords_and_llada_blocks.ipynb ----------------


def merge_pair(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def rms_norm(x, weight, eps):
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


# chars_per_token (4.2) reads the notebook's train_text and val_text: measure_with below


def attention(x, wq, wk, wv, wo, n_heads, n_kv_heads, cos, sin):
    B, L, D = x.shape
    Dh = D // n_heads
    q = (x @ wq.T).view(B, L, n_heads, Dh).transpose(1, 2)  # (B, H, L, Dh)
    k = (x @ wk.T).view(B, L, n_kv_heads, Dh).transpose(1, 2)  # (B, Hkv, L, Dh)
    v = (x @ wv.T).view(B, L, n_kv_heads, Dh).transpose(1, 2)

    def rope(t):
        return t * cos + torch.cat([-t[..., Dh // 2 :], t[..., : Dh // 2]], dim=-1) * sin

    q, k = rope(q), rope(k)
    group = n_heads // n_kv_heads  # query head h reads key/value head h // group
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    weights = (q @ k.transpose(-2, -1) / math.sqrt(Dh)).softmax(dim=-1)  # (B, H, L, L): no mask
    return (weights @ v).transpose(1, 2).reshape(B, L, D) @ wo.T


def swiglu(h, block):
    return (F.silu(h @ block.ff_proj.T) * (h @ block.up_proj.T)) @ block.ff_out.T


def llada_block(x, block, rotary, cos, sin):
    x = x + block.attn(block.attn_norm(x), rotary, cos, sin)
    return x + swiglu(block.ff_norm(x), block)


# --- the stubs, as in notebooks/04_subwords_and_llada_blocks.ipynb --------------------------------


def merge_pair_stub(ids, pair, new_id):
    raise NotImplementedError("Exercise 4.1: write the merge of one pair of tokens")


def chars_per_token_stub(vocab_sizes):
    raise NotImplementedError("Exercise 4.2: measure characters per token at each vocabulary size")


def rms_norm_stub(x, weight, eps):
    raise NotImplementedError("Exercise 4.3: write RMSNorm")


def attention_stub(x, wq, wk, wv, wo, n_heads, n_kv_heads, cos, sin):
    raise NotImplementedError("Exercise 4.4: write attention with grouped-query heads")


def llada_block_stub(x, block, rotary, cos, sin):
    raise NotImplementedError("Exercise 4.5: write the block, with its SwiGLU MLP")


EXERCISES = [  # 4.2, an experiment, has tests of its own below
    ("4.1", lesson4.check_merge_pair, merge_pair, merge_pair_stub),
    ("4.3", lesson4.check_rms_norm, rms_norm, rms_norm_stub),
    ("4.4", lesson4.check_gqa_attention, attention, attention_stub),
    ("4.5", lesson4.check_llada_block, llada_block, llada_block_stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- Exercise 4.1: merge_pair --------------------------------------------------------------------


def advances_by_one(ids, pair, new_id):  # i += 1 after a merge: the second token is kept
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
        else:
            out.append(ids[i])
        i += 1
    return out


def drops_the_last_token(ids, pair, new_id):  # while i < len(ids) - 1, nothing after the loop
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def first_occurrence_only(ids, pair, new_id):  # like str.replace(..., 1)
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return ids[:i] + [new_id] + ids[i + 2 :]
    return list(ids)


def compares_a_slice_with_the_tuple(ids, pair, new_id):  # ids[i:i+2] is a list: never == a tuple
    out, i = [], 0
    while i < len(ids):
        if ids[i : i + 2] == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def right_to_left(ids, pair, new_id):  # 'aaa' -> 'a', 'aa' instead of 'aa', 'a'
    out, i = [], len(ids) - 1
    while i >= 0:
        if i >= 1 and (ids[i - 1], ids[i]) == pair:
            out.append(new_id)
            i -= 2
        else:
            out.append(ids[i])
            i -= 1
    return out[::-1]


MERGE_MISTAKES = [
    (advances_by_one, r"case 1/6 \(one occurrence in the middle\).*\n.*expected a tuple of 4"),
    (drops_the_last_token, r"case 1/6 \(one occurrence in the middle\).*\n.*expected a tuple of 4"),
    (first_occurrence_only, r"case 2/6 \(several occurrences\).*\n.*expected a tuple of 4 items"),
    (compares_a_slice_with_the_tuple, r"case 1/6 \(one occurrence in the middle\).*\n.*expected"),
    (right_to_left, r"case 3/6 \(overlapping run 'aaa': merge left first\).*\n.*expected 256"),
]


@pytest.mark.parametrize("mistake, match", MERGE_MISTAKES, ids=ids(MERGE_MISTAKES))
def test_merge_pair_mistake_fails(mistake, match):
    assert_fails(lesson4.check_merge_pair, mistake, "4.1", match)


def test_in_place_merge_fails():
    def merges_in_place(ids, pair, new_id):  # returns the right tokens but destroys its input
        i = 0
        while i < len(ids) - 1:
            if (ids[i], ids[i + 1]) == pair:
                ids[i : i + 2] = [new_id]
            i += 1
        return ids

    ids_ = [1, 2, 3, 1, 2]
    assert merges_in_place(ids_, (1, 2), 9) == [9, 3, 9]
    assert ids_ == [9, 3, 9]  # the caller's list is gone
    assert_fails(lesson4.check_merge_pair, merges_in_place, "4.1", r"case \d+/\d+ \(")


# --- Exercise 4.2: characters per token (an experiment) -----------------------------------------


@pytest.fixture(scope="module")
def shakespeare_split(tinyshakespeare):
    """A 200,000-character training text and a 30,000-character validation text (a few tenths of
    a second per BPE at these sizes)."""
    text = tinyshakespeare.read_text(encoding="utf-8")
    return text[:200_000], text[-30_000:]


def measure_with(train_on, val):
    """chars_per_token as the solution writes it, trained on ``train_on``, measured on ``val``."""

    def measure(vocab_sizes):
        return {V: len(val) / len(train_bpe_fast(train_on, V).encode(val).ids) for V in vocab_sizes}

    return measure


def test_the_experiment_passes_with_the_measurement_and_announces_no_verdict(
    capsys, shakespeare_split
):
    train_text, val_text = shakespeare_split
    assert lesson4.check_chars_per_token(measure_with(train_text, val_text), train_text, val_text)
    out = capsys.readouterr().out
    assert out.startswith("Exercise 4.2 passed: characters per validation token ")
    assert "change per doubling of the vocabulary: +" in out and "(512 -> 1,024)" in out
    # the measurement only: what it means is the lesson's discussion cell
    for verdict in ("log V", "about the same", "less each time", "double", "parameters"):
        assert verdict not in out


def test_the_experiment_stub_is_not_attempted(capsys, shakespeare_split):
    assert not lesson4.check_chars_per_token(chars_per_token_stub, *shakespeare_split)
    out = capsys.readouterr().out
    assert "Exercise 4.2 not attempted yet" in out and "passed" not in out


def tokens_per_character(train_text, val_text):  # the ratio upside down
    def measure(vocab_sizes):
        cpt = measure_with(train_text, val_text)(vocab_sizes)
        return {V: 1 / r for V, r in cpt.items()}

    return measure


EXPERIMENT_MISTAKES = [
    ("tokens per character", tokens_per_character),
    ("measured on the training text", lambda tr, va: measure_with(tr, tr)),
    ("trained on the validation text too", lambda tr, va: measure_with(tr + va, va)),
    ("a fixed guess", lambda tr, va: lambda vs: {V: 2.5 for V in vs}),
]


@pytest.mark.parametrize("mistake", [m for _, m in EXPERIMENT_MISTAKES],
                         ids=[name for name, _ in EXPERIMENT_MISTAKES])  # fmt: skip
def test_the_experiment_refuses_other_numbers(mistake, shakespeare_split):
    message = assert_fails(
        lambda fn: lesson4.check_chars_per_token(fn, *shakespeare_split),
        mistake(*shakespeare_split),
        "4.2",
        r"vocabulary 512: expected \d\.\d{4} characters per token",
    )
    assert "training text only" in message


def test_the_experiment_refuses_missing_sizes(shakespeare_split):
    with pytest.raises(ExerciseFailed, match=r"^Exercise 4.2: expected a dict with the keys"):
        lesson4.check_chars_per_token(lambda vs: {512: 1.9}, *shakespeare_split)


# --- Exercise 4.3: rms_norm ----------------------------------------------------------------------


def normalised(x, eps):
    xf = x.float()
    return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)


def weight_before_the_cast(x, weight, eps):  # multiplies in float32, then casts: differs in bf16
    return (weight.float() * normalised(x, eps)).to(x.dtype)


def no_float32_upcast(x, weight, eps):  # normalises in bf16 directly
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def never_casts_back(x, weight, eps):  # returns float32 for a bf16 input
    return weight * normalised(x, eps)


def eps_outside_the_sqrt(x, weight, eps):  # x / (rms + eps)
    xf = x.float()
    return weight * (xf / (xf.pow(2).mean(-1, keepdim=True).sqrt() + eps)).to(x.dtype)


def subtracts_the_mean(x, weight, eps):  # LayerNorm, not RMSNorm
    return weight * normalised(x - x.mean(-1, keepdim=True), eps).to(x.dtype)


def sum_not_mean(x, weight, eps):  # sum of squares: off by sqrt(D)
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


def forgets_the_sqrt(x, weight, eps):  # divides by the mean square
    xf = x.float()
    return weight * (xf / (xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


BF16_CASE = (
    r"case 3/3 \(bfloat16 input and weight: cast back to bf16 \*before\* the weight multiply\)"
)
RMS_NORM_MISTAKES = [
    (weight_before_the_cast, BF16_CASE + r".*\n.*values differ"),
    (no_float32_upcast, BF16_CASE + r".*\n.*values differ"),
    (never_casts_back, BF16_CASE + r".*\n.*values differ"),
    (eps_outside_the_sqrt, r"case 2/3 \(a large eps changes the result\).*\n.*values differ"),
    (subtracts_the_mean, r"case 1/3 \(float32 input, random weight\).*\n.*values differ"),
    (sum_not_mean, r"case 1/3 \(float32 input, random weight\).*\n.*values differ"),
    (forgets_the_sqrt, r"case 1/3 \(float32 input, random weight\).*\n.*values differ"),
]


@pytest.mark.parametrize("mistake, match", RMS_NORM_MISTAKES, ids=ids(RMS_NORM_MISTAKES))
def test_rms_norm_mistake_fails(mistake, match):
    assert_fails(lesson4.check_rms_norm, mistake, "4.3", match)


# --- Exercise 4.4: attention with grouped-query heads --------------------------------------------


def attention_with(
    *, tile=False, causal=False, rope_q=True, rope_k=True, scale=None, adjacent=False,
    split_wrong=False, merge_wrong=False, softmax_dim=-1, project=True,
):  # fmt: skip
    """The solution above with one mistake switched on, written as a learner would."""

    def attn(x, wq, wk, wv, wo, n_heads, n_kv_heads, cos, sin):
        B, L, D = x.shape
        Dh = D // n_heads

        def heads(t, n):
            if split_wrong:
                return t.view(B, n, L, Dh)
            return t.view(B, L, n, Dh).transpose(1, 2)

        def rope(t):
            if adjacent:  # pairs (2j, 2j+1)
                a, b = t[..., 0::2], t[..., 1::2]
                c, s = cos[..., : Dh // 2], sin[..., : Dh // 2]
                return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2)
            return t * cos + torch.cat([-t[..., Dh // 2 :], t[..., : Dh // 2]], dim=-1) * sin

        q, k, v = heads(x @ wq.T, n_heads), heads(x @ wk.T, n_kv_heads), heads(x @ wv.T, n_kv_heads)
        q = rope(q) if rope_q else q
        k = rope(k) if rope_k else k
        group = n_heads // n_kv_heads
        if tile:
            k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
        else:
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(Dh if scale is None else scale(D))
        if causal:
            scores = scores + torch.full((L, L), float("-inf"), dtype=x.dtype).triu(1)
        out = scores.softmax(dim=softmax_dim) @ v
        out = out.reshape(B, L, D) if merge_wrong else out.transpose(1, 2).reshape(B, L, D)
        return out @ wo.T if project else out

    return attn


def through_sdpa_with_enable_gqa(x, wq, wk, wv, wo, n_heads, n_kv_heads, cos, sin):  # right too
    B, L, D = x.shape
    Dh = D // n_heads
    q = (x @ wq.T).view(B, L, n_heads, Dh).transpose(1, 2)
    k = (x @ wk.T).view(B, L, n_kv_heads, Dh).transpose(1, 2)
    v = (x @ wv.T).view(B, L, n_kv_heads, Dh).transpose(1, 2)

    def rope(t):
        return t * cos + torch.cat([-t[..., Dh // 2 :], t[..., : Dh // 2]], dim=-1) * sin

    out = F.scaled_dot_product_attention(rope(q), rope(k), v, enable_gqa=True)
    return out.transpose(1, 2).reshape(B, L, D) @ wo.T


def test_another_right_attention_passes(capsys):
    assert lesson4.check_gqa_attention(through_sdpa_with_enable_gqa)
    assert "Exercise 4.4 passed: 5 cases" in capsys.readouterr().out


MULTI_HEAD = r"case 1/5 \(multi-head: 4 query, 4 key/value heads, batch 2 of 8\)"
GROUPED = r"case 2/5 \(grouped-query: 4 query heads share 2 key/value heads\)"
ATTENTION_MISTAKES = [
    ("tile", dict(tile=True), GROUPED, "key/value heads repeated in the wrong order"),
    ("causal", dict(causal=True), MULTI_HEAD, "a causal mask"),
    ("no_rope_on_keys", dict(rope_k=False), MULTI_HEAD, "RoPE not applied to the keys"),
    ("no_rope_on_queries", dict(rope_q=False), MULTI_HEAD, "RoPE not applied to the queries"),
    ("no_rope", dict(rope_q=False, rope_k=False), MULTI_HEAD, "no RoPE at all"),
    ("adjacent_pairs", dict(adjacent=True), MULTI_HEAD, "RoPE on adjacent pairs"),
    ("no_scale", dict(scale=lambda D: 1), MULTI_HEAD, "scores not scaled"),
    ("scale_by_d_model", dict(scale=lambda D: D), MULTI_HEAD, "1 / sqrt\\(d_model\\)"),
    ("split_wrong", dict(split_wrong=True), MULTI_HEAD, "heads split by viewing"),
    ("merge_wrong", dict(merge_wrong=True), MULTI_HEAD, "heads merged without moving"),
    ("softmax_over_queries", dict(softmax_dim=-2), MULTI_HEAD, "softmax over the queries"),
    ("no_output_projection", dict(project=False), MULTI_HEAD, "no output projection"),
    ("causal_and_unscaled", dict(causal=True, scale=lambda D: 1), MULTI_HEAD,
     "none of the common mistakes"),
]


@pytest.mark.parametrize(
    "flags, case, named",
    [m[1:] for m in ATTENTION_MISTAKES],
    ids=[m[0] for m in ATTENTION_MISTAKES],
)
def test_attention_mistake_fails_and_is_named(flags, case, named):
    message = assert_fails(
        lesson4.check_gqa_attention, attention_with(**flags), "4.4", case + r":\n.*values differ"
    )
    assert re.search(named, message), message


def test_attention_tile_passes_plain_multi_head():
    """Tiling and repeat_interleave agree when every query head has its own key/value head: the
    checker needs its grouped cases to tell them apart."""
    case = lesson4._attention_case("multi-head", 0, 2, 8, 4, 4)
    torch.testing.assert_close(attention_with(tile=True)(*case.args), attention(*case.args))


def test_the_library_attention_is_the_hand_written_one():
    for H, Hkv in ((4, 4), (4, 2), (8, 2), (4, 1)):
        args = lesson4._attention_case("", 5, 2, 7, H, Hkv).args
        variants = lesson4._attention_variants(*args)
        torch.testing.assert_close(variants["right"], lesson4._attention_variant(*args))


# --- Exercise 4.5: the block, with its SwiGLU MLP -----------------------------------------------


def block_with(mlp=swiglu, shape="right"):
    """A block with a wrong MLP (``mlp``) or a wrong composition (``shape``)."""

    def block_fn(x, block, rotary, cos, sin):
        def a(h):
            return block.attn(h, rotary, cos, sin)

        def m(h):
            return mlp(h, block)

        n1, n2 = block.attn_norm, block.ff_norm
        if shape == "post_norm":  # the 2017 Transformer: add, then normalise
            x = n1(x + a(x))
            return n2(x + m(x))
        if shape == "no_attention_residual":
            x = a(n1(x))
            return x + m(n2(x))
        if shape == "no_mlp_residual":
            return m(n2(x + a(n1(x))))
        if shape == "one_norm_for_both":  # attn_norm twice: ff_norm's gain unused
            x = x + a(n1(x))
            return x + m(n1(x))
        if shape == "normalises_the_stream":  # x = norm(x): the skip carries norm(x)
            x = n1(x)
            x = n2(x + a(x))
            return x + m(x)
        if shape == "parallel":  # GPT-J / PaLM: both halves read the same x
            return x + a(n1(x)) + m(n2(x))
        if shape == "mlp_reads_the_branch":  # the MLP gets the attention output only
            branch = a(n1(x))
            return x + branch + m(n2(branch))
        if shape == "halves_the_mlp":  # no mistake the checker knows by name
            x = x + a(n1(x))
            return x + 0.5 * m(n2(x))
        x = x + a(n1(x))
        return x + m(n2(x))

    return block_fn


def silu_on_up(h, b):  # gate and up swapped
    return (F.silu(h @ b.up_proj.T) * (h @ b.ff_proj.T)) @ b.ff_out.T


def silu_on_product(h, b):
    return F.silu((h @ b.ff_proj.T) * (h @ b.up_proj.T)) @ b.ff_out.T


def silu_on_both(h, b):
    return (F.silu(h @ b.ff_proj.T) * F.silu(h @ b.up_proj.T)) @ b.ff_out.T


def no_silu(h, b):
    return ((h @ b.ff_proj.T) * (h @ b.up_proj.T)) @ b.ff_out.T


def gelu_gate(h, b):
    return (F.gelu(h @ b.ff_proj.T) * (h @ b.up_proj.T)) @ b.ff_out.T


def no_up_branch(h, b):
    return F.silu(h @ b.ff_proj.T) @ b.ff_out.T


FIRST_CASE = r"case 1/4 \(tiny preset, 4 heads, batch 2 of 8 positions\):\n.*values differ"
BLOCK_MISTAKES = [
    ("post_norm", block_with(shape="post_norm"), "a post-norm block"),
    ("no_attention_residual", block_with(shape="no_attention_residual"),
     "no residual around attention"),
    ("no_mlp_residual", block_with(shape="no_mlp_residual"), "no residual around the MLP"),
    ("one_norm_for_both", block_with(shape="one_norm_for_both"),
     "attn_norm used before the MLP too"),
    ("normalises_the_stream", block_with(shape="normalises_the_stream"),
     "the residual stream itself normalised"),
    ("parallel", block_with(shape="parallel"), "a parallel block"),
    ("mlp_reads_the_branch", block_with(shape="mlp_reads_the_branch"),
     "the MLP reads the attention output"),
    ("gate_and_up_swapped", block_with(silu_on_up), "SiLU on up_proj's branch, not on the gate"),
    ("silu_on_product", block_with(silu_on_product), "SiLU applied to the product"),
    ("silu_on_both", block_with(silu_on_both), "SiLU on both branches"),
    ("no_silu", block_with(no_silu), "no SiLU"),
    ("gelu", block_with(gelu_gate), "GELU instead of SiLU"),
    ("no_up_branch", block_with(no_up_branch), "the linear branch up_proj left out"),
    ("halves_the_mlp", block_with(shape="halves_the_mlp"), "Follow the figure from the bottom up"),
]  # fmt: skip


@pytest.mark.parametrize(
    "mistake, named", [m[1:] for m in BLOCK_MISTAKES], ids=[m[0] for m in BLOCK_MISTAKES]
)
def test_llada_block_mistake_fails_and_is_named(mistake, named):
    message = assert_fails(lesson4.check_llada_block, mistake, "4.5", FIRST_CASE)
    assert named in message, message


def test_the_block_gets_weights_not_the_mlp_module():
    case = lesson4._block_case("", 0, 1, 4)
    parts = lesson4.block_parts(case.args[1])
    assert not hasattr(parts, "mlp") and not hasattr(parts, "forward")
    assert parts.ff_proj.shape == (192, 64) and parts.ff_out.shape == (64, 192)
