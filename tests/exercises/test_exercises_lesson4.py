"""Lesson 4's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import math

import pytest
import torch
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


def llada_block(x, block, rotary, cos, sin):
    x = x + block.attn(block.attn_norm(x), rotary, cos, sin)
    x = x + block.mlp(block.ff_norm(x))
    return x


def bits_per_char(nats_per_token, num_tokens, num_chars):
    return nats_per_token * num_tokens / num_chars / math.log(2)


# --- the stubs, as in notebooks/04_subwords_and_llada_blocks.ipynb --------------------------------


def merge_pair_stub(ids, pair, new_id):
    raise NotImplementedError("Exercise 4.1: write the merge of one pair of tokens")


def chars_per_token_stub(vocab_sizes):
    raise NotImplementedError("Exercise 4.2: measure characters per token at each vocabulary size")


def rms_norm_stub(x, weight, eps):
    raise NotImplementedError("Exercise 4.3: write RMSNorm")


def llada_block_stub(x, block, rotary, cos, sin):
    raise NotImplementedError("Exercise 4.4: write one LLaDA block's forward pass")


def bits_per_char_stub(nats_per_token, num_tokens, num_chars):
    raise NotImplementedError("Exercise 4.5: convert the bound to bits per character")


EXERCISES = [  # 4.2, an experiment, has tests of its own below
    ("4.1", lesson4.check_merge_pair, merge_pair, merge_pair_stub),
    ("4.3", lesson4.check_rms_norm, rms_norm, rms_norm_stub),
    ("4.4", lesson4.check_llada_block, llada_block, llada_block_stub),
    ("4.5", lesson4.check_bits_per_char, bits_per_char, bits_per_char_stub),
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


def test_the_experiment_passes_with_the_measurement_and_judges_it(capsys, shakespeare_split):
    train_text, val_text = shakespeare_split
    assert lesson4.check_chars_per_token(measure_with(train_text, val_text), train_text, val_text)
    out = capsys.readouterr().out
    assert out.startswith("Exercise 4.2 passed: characters per validation token ")
    assert "Each doubling of the vocabulary adds" in out and "0.13M at 512 ids" in out


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


# --- Exercise 4.4: llada_block -------------------------------------------------------------------


def post_norm(x, block, rotary, cos, sin):  # the 2017 Transformer: add, then normalise
    x = block.attn_norm(x + block.attn(x, rotary, cos, sin))
    return block.ff_norm(x + block.mlp(x))


def forgets_the_attention_residual(x, block, rotary, cos, sin):
    x = block.attn(block.attn_norm(x), rotary, cos, sin)
    return x + block.mlp(block.ff_norm(x))


def forgets_the_mlp_residual(x, block, rotary, cos, sin):
    x = x + block.attn(block.attn_norm(x), rotary, cos, sin)
    return block.mlp(block.ff_norm(x))


def one_norm_for_both(x, block, rotary, cos, sin):  # attn_norm twice: ff_norm's gain unused
    x = x + block.attn(block.attn_norm(x), rotary, cos, sin)
    return x + block.mlp(block.attn_norm(x))


def normalises_the_stream(x, block, rotary, cos, sin):  # x = norm(x): the skip carries norm(x)
    x = block.attn_norm(x)
    x = x + block.attn(x, rotary, cos, sin)
    x = block.ff_norm(x)
    return x + block.mlp(x)


def parallel_block(x, block, rotary, cos, sin):  # GPT-J / PaLM: both halves read the same x
    return x + block.attn(block.attn_norm(x), rotary, cos, sin) + block.mlp(block.ff_norm(x))


def mlp_reads_the_branch(x, block, rotary, cos, sin):  # the MLP gets the attention output only
    a = block.attn(block.attn_norm(x), rotary, cos, sin)
    return x + a + block.mlp(block.ff_norm(a))


def halves_the_mlp(x, block, rotary, cos, sin):  # no mistake the checker knows by name
    x = x + block.attn(block.attn_norm(x), rotary, cos, sin)
    return x + 0.5 * block.mlp(block.ff_norm(x))


FIRST_CASE = r"case 1/4 \(tiny preset, 4 heads, batch 2 of 8 positions\):\n.*values differ"
BLOCK_MISTAKES = [
    (post_norm, "a post-norm block"),
    (forgets_the_attention_residual, "no residual around attention"),
    (forgets_the_mlp_residual, "no residual around the MLP"),
    (one_norm_for_both, "attn_norm used before the MLP too"),
    (normalises_the_stream, "the residual stream itself normalised"),
    (parallel_block, "a parallel block"),
    (mlp_reads_the_branch, "the MLP reads the attention output"),
    (halves_the_mlp, "Follow the figure from the bottom up"),
]


@pytest.mark.parametrize("mistake, named", BLOCK_MISTAKES, ids=ids(BLOCK_MISTAKES))
def test_llada_block_mistake_fails_and_is_named(mistake, named):
    message = assert_fails(lesson4.check_llada_block, mistake, "4.4", FIRST_CASE)
    assert named in message
    assert "each half reads a normalised copy of the stream" in message


# --- Exercise 4.5: bits_per_char -----------------------------------------------------------------


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
    assert_fails(lesson4.check_bits_per_char, mistake, "4.5", match)
