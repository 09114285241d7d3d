"""Lesson 4's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import math

import pytest
import torch
from checker_cases import assert_fails, ids, solution_and_stub_tests

from minillada.exercises import lesson4

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


def rope(x, theta):
    L, Dh = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, Dh, 2).float() / Dh)  # (Dh/2,)
    angles = torch.outer(torch.arange(L).float(), inv_freq).repeat(1, 2)  # (L, Dh)
    x1, x2 = x.float().chunk(2, dim=-1)
    return (x.float() * angles.cos() + torch.cat([-x2, x1], dim=-1) * angles.sin()).to(x.dtype)


def bits_per_char(nats_per_token, num_tokens, num_chars):
    return nats_per_token * num_tokens / num_chars / math.log(2)


# --- the stubs, as in notebooks/04_subwords_and_llada_blocks.ipynb --------------------------------


def merge_pair_stub(ids, pair, new_id):
    raise NotImplementedError(
        "Exercise 4.3: replace each (non-overlapping, left to right) occurrence of pair by new_id"
    )


def rms_norm_stub(x, weight, eps):
    raise NotImplementedError(
        "Exercise 4.1: x / sqrt(mean(x^2) + eps) in float32, cast back, times weight"
    )


def rope_stub(x, theta):
    raise NotImplementedError("Exercise 4.2: rotate-half RoPE with angles pos / theta^(2j/Dh)")


def bits_per_char_stub(nats_per_token, num_tokens, num_chars):
    raise NotImplementedError("Exercise 4.4: nats/token x tokens/characters / ln 2")


EXERCISES = [
    ("4.1", lesson4.check_rms_norm, rms_norm, rms_norm_stub),
    ("4.2", lesson4.check_rope, rope, rope_stub),
    ("4.3", lesson4.check_merge_pair, merge_pair, merge_pair_stub),
    ("4.4", lesson4.check_bits_per_char, bits_per_char, bits_per_char_stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- Exercise 4.1: rms_norm ----------------------------------------------------------------------


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
    assert_fails(lesson4.check_rms_norm, mistake, "4.1", match)


# --- Exercise 4.2: rope --------------------------------------------------------------------------


def angles_for(L, Dh, theta, first_position=0):
    inv_freq = 1.0 / theta ** (torch.arange(0, Dh, 2).float() / Dh)
    return torch.outer(torch.arange(first_position, first_position + L).float(), inv_freq)


def rotate_half(x, angles):
    angles = angles.repeat(1, 2)
    x1, x2 = x.float().chunk(2, dim=-1)
    return (x.float() * angles.cos() + torch.cat([-x2, x1], dim=-1) * angles.sin()).to(x.dtype)


def interleaved_pairs(x, theta):  # rotates (x0, x1), (x2, x3), ...: GPT-J's layout, not LLaMA's
    a = angles_for(*x.shape[-2:], theta)
    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]
    out = torch.stack([x1 * a.cos() - x2 * a.sin(), x1 * a.sin() + x2 * a.cos()], dim=-1)
    return out.flatten(-2).to(x.dtype)


def rotates_the_wrong_way(x, theta):  # cat([x2, -x1]): rotation by -angle
    a = angles_for(*x.shape[-2:], theta).repeat(1, 2)
    x1, x2 = x.float().chunk(2, dim=-1)
    return (x.float() * a.cos() + torch.cat([x2, -x1], dim=-1) * a.sin()).to(x.dtype)


def positions_from_one(x, theta):  # off by one: the first token is rotated
    return rotate_half(x, angles_for(*x.shape[-2:], theta, first_position=1))


def exponent_j_over_Dh(x, theta):  # theta^(j / Dh) instead of theta^(2j / Dh)
    L, Dh = x.shape[-2:]
    inv_freq = 1.0 / theta ** (torch.arange(Dh // 2).float() / Dh)
    return rotate_half(x, torch.outer(torch.arange(L).float(), inv_freq))


def ignores_theta(x, theta):  # hard-codes the usual 10000
    return rotate_half(x, angles_for(*x.shape[-2:], 10_000.0))


def repeat_interleave_angles(x, theta):  # angles laid out for the interleaved layout
    a = angles_for(*x.shape[-2:], theta).repeat_interleave(2, dim=-1)
    x1, x2 = x.float().chunk(2, dim=-1)
    return (x.float() * a.cos() + torch.cat([-x2, x1], dim=-1) * a.sin()).to(x.dtype)


ROPE_MISTAKES = [
    (interleaved_pairs, r"case 1/3 \(\(2, 3, 8, 16\), theta = 10000\).*\n.*values differ"),
    (rotates_the_wrong_way, r"case 1/3 \(\(2, 3, 8, 16\), theta = 10000\).*\n.*values differ"),
    (positions_from_one, r"case 1/3 \(\(2, 3, 8, 16\), theta = 10000\).*\n.*values differ"),
    (exponent_j_over_Dh, r"case 1/3 \(\(2, 3, 8, 16\), theta = 10000\).*\n.*values differ"),
    (ignores_theta, r"case 2/3 \(LLaDA-8B's theta = 500000\).*\n.*values differ"),
    (repeat_interleave_angles, r"case 1/3 \(\(2, 3, 8, 16\), theta = 10000\).*\n.*values differ"),
]


@pytest.mark.parametrize("mistake, match", ROPE_MISTAKES, ids=ids(ROPE_MISTAKES))
def test_rope_mistake_fails(mistake, match):
    assert_fails(lesson4.check_rope, mistake, "4.2", match)


# --- Exercise 4.3: merge_pair --------------------------------------------------------------------


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
    assert_fails(lesson4.check_merge_pair, mistake, "4.3", match)


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
    assert_fails(lesson4.check_merge_pair, merges_in_place, "4.3", r"case \d+/\d+ \(")


# --- Exercise 4.4: bits_per_char -----------------------------------------------------------------


def multiplies_by_ln2(nats_per_token, num_tokens, num_chars):  # * ln 2 instead of / ln 2
    return nats_per_token * num_tokens / num_chars * math.log(2)


def inverted_ratio(nats_per_token, num_tokens, num_chars):  # chars / tokens instead of tokens/chars
    return nats_per_token * num_chars / num_tokens / math.log(2)


def log10_not_ln2(nats_per_token, num_tokens, num_chars):  # digits, not bits
    return nats_per_token * num_tokens / num_chars / math.log(10)


def forgets_tokens_per_char(nats_per_token, num_tokens, num_chars):  # bits per token
    return nats_per_token / math.log(2)


def integer_division(nats_per_token, num_tokens, num_chars):  # tokens // chars is 0 for subwords
    return nats_per_token * (num_tokens // num_chars) / math.log(2)


BPC_MISTAKES = [
    (multiplies_by_ln2, r"case 1/3 \(ln 2 nats per token, one char per token = 1 bit/char\).*\n"
     r".*expected 1\.0, got"),
    (inverted_ratio, r"case 2/3 \(3 nats/token, 2\.5 chars/token\).*\n.*expected 1\.73"),
    (log10_not_ln2, r"case 1/3 \(ln 2 nats per token.*\).*\n.*expected 1\.0, got"),
    (forgets_tokens_per_char, r"case 2/3 \(3 nats/token, 2\.5 chars/token\).*\n.*expected 1\.73"),
    (integer_division, r"case 2/3 \(3 nats/token, 2\.5 chars/token\).*\n.*expected 1\.73"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", BPC_MISTAKES, ids=ids(BPC_MISTAKES))
def test_bits_per_char_mistake_fails(mistake, match):
    assert_fails(lesson4.check_bits_per_char, mistake, "4.4", match)
