"""Lesson 5's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import json
import struct

import pytest
import torch
from checker_cases import assert_fails, ids, solution_and_stub_tests

from minillada.exercises import lesson5

# --- the solutions, as in notebooks/solutions/05_the_8b_architecture.ipynb -----------------------


def llada_parameters(config):
    D, F_, V = config.d_model, config.hidden_size, config.vocab_rows
    Dkv = config.kv_heads * config.head_dim
    per_block = 2 * D * D + 2 * Dkv * D + 3 * D * F_ + 2 * D  # attention + MLP + two norms
    return 2 * V * D + config.n_layers * per_block + D  # embedding + head (untied) + blocks + ln_f


def block_keys(config, n):
    D, F_, Dkv = config.d_model, config.hidden_size, config.kv_heads * config.head_dim
    shapes = {
        "attn_norm": (D,), "q_proj": (D, D), "k_proj": (Dkv, D), "v_proj": (Dkv, D),
        "attn_out": (D, D), "ff_norm": (D,), "ff_proj": (F_, D), "up_proj": (F_, D),
        "ff_out": (D, F_),
    }  # fmt: skip
    return {f"model.transformer.blocks.{n}.{name}.weight": shape for name, shape in shapes.items()}


SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
}


def read_tensor(path, key):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        info = json.loads(f.read(n))[key]
        begin, end = info["data_offsets"]
        f.seek(8 + n + begin)
        data = bytearray(f.read(end - begin))
    return torch.frombuffer(data, dtype=SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])


def attention_parameters(config):
    D = config.d_model
    Dkv = (config.n_kv_heads or config.n_heads) * (D // config.n_heads)
    return D * D + 2 * Dkv * D + D * D  # q, k and v, output


def illada_key(llada_key):
    top = {
        "model.transformer.wte.weight": "model.embed_tokens.weight",
        "model.transformer.ln_f.weight": "model.norm.weight",
        "model.transformer.ff_out.weight": "lm_head.weight",
    }
    if llada_key in top:
        return top[llada_key]
    n, part = llada_key.split(".")[3], llada_key.split(".")[4]
    block = {
        "attn_norm": "input_layernorm", "q_proj": "self_attn.q_proj",
        "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj", "attn_out": "self_attn.o_proj",
        "ff_norm": "post_attention_layernorm", "ff_proj": "mlp.gate_proj",
        "up_proj": "mlp.up_proj", "ff_out": "mlp.down_proj",
    }  # fmt: skip
    return f"model.layers.{n}.{block[part]}.weight"


# --- the stubs, as in notebooks/05_the_8b_architecture.ipynb --------------------------------------


def llada_parameters_stub(config):
    raise NotImplementedError(
        "Exercise 5.1: embedding + head + n_layers * (attention + MLP + 2 norms) + ln_f"
    )


def block_keys_stub(config, n):
    raise NotImplementedError(
        "Exercise 5.2: {'model.transformer.blocks.<n>.<name>.weight': shape} for the 9 tensors"
    )


def read_tensor_stub(path, key):
    raise NotImplementedError(
        "Exercise 5.3: struct-unpack N, json-load the header, read bytes [8+N+begin, 8+N+end)"
    )


def attention_parameters_stub(config):
    raise NotImplementedError(
        "Exercise 5.4: the four projections of one block, with n_kv_heads key/value heads"
    )


def illada_key_stub(llada_key):
    raise NotImplementedError("Exercise 5.5: the table above, as a function of the LLaDA name")


EXERCISES = [
    ("5.1", lesson5.check_parameter_count, llada_parameters, llada_parameters_stub),
    ("5.2", lesson5.check_block_keys, block_keys, block_keys_stub),
    ("5.3", lesson5.check_read_tensor, read_tensor, read_tensor_stub),
    ("5.4", lesson5.check_gqa_parameters, attention_parameters, attention_parameters_stub),
    ("5.5", lesson5.check_illada_key, illada_key, illada_key_stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- Exercise 5.1: llada_parameters --------------------------------------------------------------


def tied_head(config):  # forgets that LLaDA's output head is not the embedding
    return llada_parameters(config) - config.vocab_rows * config.d_model


def forgets_the_norms(config):  # no RMSNorm weights (2 per block + ln_f)
    return llada_parameters(config) - (2 * config.n_layers + 1) * config.d_model


def forgets_ln_f(config):  # the final norm after the last block
    return llada_parameters(config) - config.d_model


def counts_tokens_not_rows(config):  # vocab_size instead of the padded embedding_size
    extra_rows = config.vocab_rows - config.vocab_size
    return llada_parameters(config) - 2 * extra_rows * config.d_model


def no_grouped_query_attention(config):  # k_proj and v_proj as wide as q_proj
    D, Dkv = config.d_model, config.kv_heads * config.head_dim
    return llada_parameters(config) + config.n_layers * 2 * (D - Dkv) * D


def two_matrix_mlp(config):  # a GELU MLP: forgets SwiGLU's up_proj
    return llada_parameters(config) - config.n_layers * config.d_model * config.hidden_size


def counts_biases(config):  # LLaDA's linear layers have no bias
    D, F_, Dkv = config.d_model, config.hidden_size, config.kv_heads * config.head_dim
    return llada_parameters(config) + config.n_layers * (3 * D + 2 * Dkv + 2 * F_)


def reads_mlp_hidden_size(config):  # the field, which is None when mlp_ratio decides the width
    D, F_, V = config.d_model, config.mlp_hidden_size, config.vocab_rows
    Dkv = config.kv_heads * config.head_dim
    return 2 * V * D + config.n_layers * (2 * D * D + 2 * Dkv * D + 3 * D * F_ + 2 * D) + D


RELEASED = r"case 1/6 \(the released LLaDA-8B \(preset 'llada_8b'\)\).*\n.*expected 8015581184, got"
PARAMETER_MISTAKES = [
    (tied_head, RELEASED),
    (forgets_the_norms, RELEASED),
    (forgets_ln_f, RELEASED),
    (counts_tokens_not_rows, r"case 5/6 \(embedding_size larger than vocab_size: the rows count, "
     r"not the tokens\).*\n.*expected \d+, got \d+"),
    (no_grouped_query_attention, r"case 4/6 \(grouped-query attention: 8 key/value heads for 32 "
     r"query heads\).*\n.*expected \d+, got \d+"),
    (two_matrix_mlp, RELEASED),
    (counts_biases, RELEASED),
    (reads_mlp_hidden_size, r"your function raised TypeError.*\n"
     r"  on case 6/6: mlp_hidden_size=None"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", PARAMETER_MISTAKES, ids=ids(PARAMETER_MISTAKES))
def test_parameter_count_mistake_fails(mistake, match):
    assert_fails(lesson5.check_parameter_count, mistake, "5.1", match)


# --- Exercise 5.2: block_keys --------------------------------------------------------------------


def renamed(config, n, names):
    prefix = f"model.transformer.blocks.{n}."
    out = {}
    for key, shape in block_keys(config, n).items():
        name = key[len(prefix) :].split(".")[0]
        out[f"{prefix}{names.get(name, name)}.weight"] = shape
    return out


def no_gqa(config, n):  # k/v as wide as q, wrong once n_kv_heads < n_heads
    out = block_keys(config, n)
    for p in "kv":
        out[f"model.transformer.blocks.{n}.{p}_proj.weight"] = (config.d_model,) * 2
    return out


def transposed_ff_out(config, n):  # (in, out) for one matrix
    out = block_keys(config, n)
    key = f"model.transformer.blocks.{n}.ff_out.weight"
    out[key] = out[key][::-1]
    return out


def in_features_first(config, n):  # (in_features, out_features) everywhere: nn.Linear is (out, in)
    return {key: shape[::-1] for key, shape in block_keys(config, n).items()}


def hugging_face_names(config, n):  # LLaMA's names, not the released checkpoint's
    return renamed(config, n, {"attn_out": "o_proj", "ff_proj": "gate_proj", "ff_out": "down_proj"})


def always_block_0(config, n):  # ignores n
    return block_keys(config, 0)


def no_model_prefix(config, n):  # "transformer.blocks...": the released keys start with "model."
    return {key.removeprefix("model."): shape for key, shape in block_keys(config, n).items()}


def mlp_ratio_width(config, n):  # 4 * d_model instead of the configured hidden size (12288)
    D = config.d_model
    out = block_keys(config, n)
    prefix = f"model.transformer.blocks.{n}."
    out.update({
        prefix + "ff_proj.weight": (4 * D, D), prefix + "up_proj.weight": (4 * D, D),
        prefix + "ff_out.weight": (D, 4 * D),
    })  # fmt: skip
    return out


BLOCK_KEY_MISTAKES = [
    (no_gqa, r"case 4/4 \(grouped-query attention: k_proj and v_proj shrink to n_kv_heads \* "
     r"head_dim rows\).*\n.*k_proj\.weight: expected shape \(1024, 4096\), got \(4096, 4096\)"),
    (transposed_ff_out, r"case 1/4 \(block 0 of LLaDA-8B\).*\n"
     r"model\.transformer\.blocks\.0\.ff_out\.weight: expected shape \(4096, 12288\)"),
    (in_features_first, r"case 1/4 \(block 0 of LLaDA-8B\).*\n.*: expected shape"),
    (hugging_face_names, r"case 1/4 \(block 0 of LLaDA-8B\).*\n.*keys differ: missing "
     r"\['model\.transformer\.blocks\.0\.attn_out\.weight'"),
    (always_block_0, r"case 2/4 \(block 31 \(the last\) of LLaDA-8B\).*\n.*keys differ"),
    (no_model_prefix, r"case 1/4 \(block 0 of LLaDA-8B\).*\n.*keys differ"),
    (mlp_ratio_width, r"case 1/4 \(block 0 of LLaDA-8B\).*\n"
     r".*ff_proj\.weight: expected shape \(12288, 4096\), got \(16384, 4096\)"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", BLOCK_KEY_MISTAKES, ids=ids(BLOCK_KEY_MISTAKES))
def test_block_keys_mistake_fails(mistake, match):
    assert_fails(lesson5.check_block_keys, mistake, "5.2", match)


# --- Exercise 5.3: read_tensor -------------------------------------------------------------------


def read(path, key, header_length_format="<Q", data_start=None, count=None, dtypes=None):
    """read_tensor with one of its steps swapped for a mistake; returns the raw 1-d tensor."""
    with open(path, "rb") as f:
        (n,) = struct.unpack(header_length_format, f.read(8))
        info = json.loads(f.read(n))[key]
        begin, end = info["data_offsets"]
        f.seek(8 + n + begin if data_start is None else data_start(n, begin))
        data = bytearray(f.read(end - begin if count is None else count(begin, end)))
    return torch.frombuffer(data, dtype=(dtypes or SAFETENSORS_DTYPES)[info["dtype"]]), info


def forgets_the_header(path, key):  # offsets counted from the start of the file
    data, info = read(path, key, data_start=lambda n, begin: begin)
    return data.reshape(info["shape"])


def forgets_the_length_field(path, key):  # skips the header but not the 8-byte length before it
    data, info = read(path, key, data_start=lambda n, begin: n + begin)
    return data.reshape(info["shape"])


def reads_up_to_end(path, key):  # f.read(end): data_offsets[1] is an offset, not a byte count
    data, info = read(path, key, count=lambda begin, end: end)
    return data.reshape(info["shape"])


def no_reshape(path, key):  # returns the flat buffer
    return read(path, key)[0]


def always_float(path, key):  # casts every tensor to float32
    data, info = read(path, key)
    return data.reshape(info["shape"]).float()


def bf16_read_as_f16(path, key):  # both are 16-bit, but not the same format
    data, info = read(path, key, dtypes=dict(SAFETENSORS_DTYPES, BF16=torch.float16))
    return data.reshape(info["shape"])


def reshape_with_star(path, key):  # view(*shape) when there is a shape: () becomes (1,)
    data, info = read(path, key)
    return data.view(*info["shape"]) if info["shape"] else data


def big_endian_length(path, key):  # ">Q": safetensors stores the header length little-endian
    data, info = read(path, key, header_length_format=">Q")
    return data.reshape(info["shape"])


READ_MISTAKES = [
    (forgets_the_header, r"case 1/6 \(a float32 matrix \(F32\)\).*\n.*values differ: check the "
     r"start of the data \(8 \+ header length \+ data_offsets\[0\]\).*\n  expected tensor"),
    (forgets_the_length_field, r"case 1/6 \(a float32 matrix \(F32\)\).*\n.*values differ"),
    (reads_up_to_end, r"your function raised RuntimeError.*\n  on case 1/6: a float32 matrix"),
    (no_reshape, r"case 1/6 \(a float32 matrix \(F32\)\).*\n"
     r"expected shape \(11, 6\), got \(66,\); reshape to the header's shape"),
    (always_float, r"case 2/6 \(a bfloat16 matrix \(BF16\), as in LLaDA's shards\).*\n"
     r"expected dtype torch\.bfloat16, got torch\.float32"),
    (bf16_read_as_f16, r"case 2/6 \(a bfloat16 matrix \(BF16\).*\).*\n"
     r"expected dtype torch\.bfloat16, got torch\.float16"),
    (reshape_with_star, r"case 5/6 \(a 0-dimensional tensor \(shape \[\]\)\).*\n"
     r"expected shape \(\), got \(1,\)"),
    (big_endian_length, r"your function raised \w+Error.*\n  on case 1/6: a float32 matrix"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", READ_MISTAKES, ids=ids(READ_MISTAKES))
def test_read_tensor_mistake_fails(mistake, match):
    assert_fails(lesson5.check_read_tensor, mistake, "5.3", match)


# --- Exercise 5.4: attention_parameters (iLLaDA) ------------------------------------------------


def test_gqa_mistakes_fail():
    def ignores_kv_heads(config):  # every projection D x D, as in LLaDA
        return 4 * config.d_model**2

    assert_fails(
        lesson5.check_gqa_parameters, ignores_kv_heads, "5.4", r"case 2/5 \(iLLaDA-8B.*\n.*expected"
    )

    def kv_heads_times_d(config):  # forgets the head dimension: Hkv x D instead of Hkv x Dh x D
        D = config.d_model
        return 2 * D * D + 2 * (config.n_kv_heads or config.n_heads) * D

    assert_fails(lesson5.check_gqa_parameters, kv_heads_times_d, "5.4", r"case 1/5")

    def none_crashes(config):  # n_kv_heads=None taken literally
        return 2 * config.d_model**2 + 2 * config.n_kv_heads * config.head_dim * config.d_model

    assert_fails(
        lesson5.check_gqa_parameters,
        none_crashes,
        "5.4",
        r"your function raised TypeError.*\n  on case 4/5: n_kv_heads=None",
    )


# --- Exercise 5.5: illada_key --------------------------------------------------------------------


def test_illada_key_mistakes_fail():
    def both_ff_out_are_down_proj(key):  # the head mapped like a block's ff_out
        if key == "model.transformer.ff_out.weight":
            return "model.mlp.down_proj.weight"
        return illada_key(key)

    assert_fails(
        lesson5.check_illada_key,
        both_ff_out_are_down_proj,
        "5.5",
        r"case 11/11 \(.*output head.*\n.*expected 'lm_head",
    )

    def gate_and_up_swapped(key):  # ff_proj is the gate, up_proj the linear branch
        out = illada_key(key)
        return out.replace("gate_proj", "@").replace("up_proj", "gate_proj").replace("@", "up_proj")

    assert_fails(lesson5.check_illada_key, gate_and_up_swapped, "5.5", r"case 7/11 \(.*gate")
