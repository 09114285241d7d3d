"""Lesson 5's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import json
import struct
from pathlib import Path

import pytest
import torch
from checker_cases import assert_fails, ids, solution_and_stub_tests
from safetensors import safe_open

from minillada.checkpoints.hf import read_hf_config
from minillada.exercises import lesson5
from minillada.models.llada import LLaDAModel, preset

# --- the solutions, as in notebooks/solutions/05_the_8b_architecture.ipynb -----------------------


def llada_parameters(config):
    D, F_, V = config.d_model, config.hidden_size, config.vocab_rows
    Dkv = config.kv_heads * config.head_dim
    per_block = 2 * D * D + 2 * Dkv * D + 3 * D * F_ + 2 * D  # attention + MLP + two norms
    heads = 1 if config.weight_tying else 2  # a tied head is the embedding matrix itself
    return heads * V * D + config.n_layers * per_block + D  # embedding (+ head) + blocks + ln_f


def config_from_shapes(shapes, head_dim):
    D = shapes["model.transformer.ln_f.weight"][0]
    blocks = {int(k.split(".")[3]) for k in shapes if k.startswith("model.transformer.blocks.")}
    return {
        "d_model": D,
        "n_heads": D // head_dim,
        "n_layers": len(blocks),
        "hidden_size": shapes["model.transformer.blocks.0.ff_proj.weight"][0],
        "vocab_rows": shapes["model.transformer.wte.weight"][0],
        "kv_heads": shapes["model.transformer.blocks.0.k_proj.weight"][0] // head_dim,
        "weight_tying": "model.transformer.ff_out.weight" not in shapes,
    }


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


def load_snapshot(folder, model_key):
    config = read_hf_config(folder)
    model = LLaDAModel(config, device="meta")  # names and shapes, no memory
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    weight_map = json.loads((Path(folder) / "model.safetensors.index.json").read_text())
    tensors = {}
    for shard in sorted(set(weight_map["weight_map"].values())):  # every shard, each once
        with safe_open(Path(folder) / shard, framework="pt") as f:
            for key in f.keys():
                name = model_key(key)
                if name not in expected:
                    raise KeyError(f"{key} in {shard} fills no parameter of the model ({name})")
                tensor = f.get_tensor(key)
                if tuple(tensor.shape) != expected[name]:
                    raise ValueError(
                        f"{key} in {shard}: shape {tuple(tensor.shape)}, the model's is "
                        f"{expected[name]}"
                    )
                tensors[name] = tensor
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise KeyError(f"the snapshot has no tensor for {missing[:3]}")
    model.load_state_dict(tensors, assign=True)  # the meta parameters replaced by the tensors
    return model.eval()


def measure_kv_heads(kv_heads):
    results = {}
    for h in kv_heads:
        meta_llada = LLaDAModel(preset("llada_8b", n_kv_heads=h), device="meta")
        parameters = sum(p.numel() for p in meta_llada.parameters())
        kv_features = sum(
            block.k_proj.weight.shape[0] + block.v_proj.weight.shape[0]
            for block in meta_llada.transformer.blocks
        )
        results[h] = (parameters, 2 * kv_features)  # 2 bytes per value in bf16
    return results


# --- the stubs, as in notebooks/05_the_8b_architecture.ipynb -------------------------------------


def llada_parameters_stub(config):
    raise NotImplementedError("Exercise 5.1: count LLaDAModel(config)'s parameters from the config")


def config_from_shapes_stub(shapes, head_dim):
    raise NotImplementedError("Exercise 5.2: read the architecture off the names and shapes")


def read_tensor_stub(path, key):
    raise NotImplementedError("Exercise 5.3: read one tensor from the safetensors file's bytes")


def load_snapshot_stub(folder, model_key):
    raise NotImplementedError("Exercise 5.4: write the loop that loads a sharded snapshot")


def measure_kv_heads_stub(kv_heads):
    raise NotImplementedError("Exercise 5.5: measure LLaDA-8B for each number of key/value heads")



EXERCISES = [
    ("5.1", lesson5.check_parameter_count, llada_parameters, llada_parameters_stub),
    ("5.2", lesson5.check_config_from_shapes, config_from_shapes, config_from_shapes_stub),
    ("5.3", lesson5.check_read_tensor, read_tensor, read_tensor_stub),
    ("5.4", lesson5.check_load_snapshot, load_snapshot, load_snapshot_stub),
    ("5.5", lesson5.check_kv_heads_experiment, measure_kv_heads, measure_kv_heads_stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- Exercise 5.1: llada_parameters --------------------------------------------------------------


def always_tied(config):  # forgets that LLaDA's output head is not the embedding
    untied = 0 if config.weight_tying else config.vocab_rows * config.d_model
    return llada_parameters(config) - untied


def never_tied(config):  # forgets that iLLaDA's head is the embedding: counts it twice
    tied = config.vocab_rows * config.d_model if config.weight_tying else 0
    return llada_parameters(config) + tied


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


RELEASED = r"case 1/8 \(the released LLaDA-8B \(preset 'llada_8b'\)\).*\n.*expected 8015581184, got"
TIED = r"case 7/8 \(iLLaDA-8B \(preset 'illada_8b'\): weight_tying=True.*\n.*expected 7615025152"
PARAMETER_MISTAKES = [
    (always_tied, RELEASED),
    (never_tied, TIED),
    (forgets_the_norms, RELEASED),
    (forgets_ln_f, RELEASED),
    (counts_tokens_not_rows, r"case 5/8 \(embedding_size larger than vocab_size: the rows count, "
     r"not the tokens\).*\n.*expected \d+, got \d+"),
    (no_grouped_query_attention, r"case 4/8 \(grouped-query attention: 8 key/value heads for 32 "
     r"query heads\).*\n.*expected \d+, got \d+"),
    (two_matrix_mlp, RELEASED),
    (counts_biases, RELEASED),
    (reads_mlp_hidden_size, r"your function raised TypeError.*\n"
     r"  on case 6/8: mlp_hidden_size=None"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", PARAMETER_MISTAKES, ids=ids(PARAMETER_MISTAKES))
def test_parameter_count_mistake_fails(mistake, match):
    assert_fails(lesson5.check_parameter_count, mistake, "5.1", match)


# --- Exercise 5.2: config_from_shapes ------------------------------------------------------------


def with_field(name, value_of):
    """The solution with one field computed another way."""

    def fn(shapes, head_dim):
        out = config_from_shapes(shapes, head_dim)
        out[name] = value_of(shapes, head_dim)
        return out

    return fn


def block_numbers(shapes):
    return [k.split(".")[3] for k in shapes if k.startswith("model.transformer.blocks.")]


CONFIG_MISTAKES = [
    (with_field("kv_heads", lambda s, dh: s["model.transformer.blocks.0.k_proj.weight"][1] // dh),
     r"case 3/6 \(grouped-query attention.*\n.*kv_heads: expected 8, got 32\. k_proj has"),
    (with_field("weight_tying", lambda s, dh: False),
     r"case 4/6 \(iLLaDA-8B.*\n.*weight_tying: expected True, got False\. A tied model"),
    (with_field("n_layers", lambda s, dh: max(int(n) for n in block_numbers(s))),
     r"case 1/6 \(LLaDA-8B's 291 tensors.*\n.*n_layers: expected 32, got 31"),
    (with_field("n_layers", lambda s, dh: int(max(block_numbers(s))) + 1),
     r"case 1/6 .*\n.*n_layers: expected 32, got 10\. Count the distinct"),
    (with_field("hidden_size", lambda s, dh: next(
        v[1] for k, v in s.items() if k.endswith("ff_out.weight"))),
     r"case \d/6 .*\n.*hidden_size: expected \d+, got \d+\. The MLP width"),
    (with_field("vocab_rows", lambda s, dh: s["model.transformer.ff_out.weight"][0]),
     r"your function raised KeyError.*\n  on case 4/6: iLLaDA-8B"),
    (with_field("d_model", lambda s, dh: str(s["model.transformer.ln_f.weight"][0])),
     r"case 1/6 .*\n.*d_model: expected 4096, got '4096'"),
    (lambda shapes, head_dim: list(config_from_shapes(shapes, head_dim).values()),
     r"case 1/6 .*\n.*expected a dict with the keys"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", CONFIG_MISTAKES, ids=[
    "kv_heads_from_in_features", "never_tied", "max_block_number", "max_block_number_as_string",
    "hidden_size_from_the_head", "vocab_from_the_head", "a_string", "a_list",
])  # fmt: skip
def test_config_from_shapes_mistake_fails(mistake, match):
    assert_fails(lesson5.check_config_from_shapes, mistake, "5.2", match)


def test_the_shapes_come_in_a_shuffled_order():
    keys = list(lesson5.checkpoint_shapes(preset("tiny"), 0))
    assert keys != list(LLaDAModel(preset("tiny"), device="meta").state_dict())
    assert len(keys) == 2 * 9 + 3


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


# --- Exercise 5.4: load_snapshot -----------------------------------------------------------------


def loop(folder, model_key, shards=None, change=None, check_shapes=True, check_filled=True):
    """A hand-written loader with one of its steps swapped for a mistake; fills the meta model
    parameter by parameter, as the library does."""
    model = LLaDAModel(read_hf_config(folder), device="meta")
    params = dict(model.named_parameters())
    weight_map = json.loads((Path(folder) / "model.safetensors.index.json").read_text())
    files = sorted(set(weight_map["weight_map"].values()))
    for shard in shards(files) if shards else files:
        with safe_open(Path(folder) / shard, framework="pt") as f:
            for key in f.keys():
                name = model_key(key)
                tensor = f.get_tensor(key).clone()
                tensor = change(tensor) if change else tensor
                if check_shapes and tensor.shape != params[name].shape:
                    raise ValueError(f"{key}: {tuple(tensor.shape)} != {tuple(params[name].shape)}")
                module_name, _, attr = name.rpartition(".")
                setattr(model.get_submodule(module_name), attr, torch.nn.Parameter(tensor))
    left = [name for name, p in model.named_parameters() if p.is_meta]
    if check_filled and left:
        raise KeyError(f"unfilled: {left[:3]}")
    return model


def test_the_loop_with_setattr_passes():  # the checker's cases also accept this way of filling
    assert lesson5.check_load_snapshot(loop)


def skips_the_last_shard(folder, model_key):  # range(1, n) instead of range(1, n + 1)
    return loop(folder, model_key, shards=lambda files: files[:-1], check_filled=False)


def only_the_first_shard(folder, model_key):  # as if the snapshot were a single file
    return loop(folder, model_key, shards=lambda files: files[:1], check_filled=False)


def transposes_the_matrices(folder, model_key):  # takes the file for [in_features, out_features]
    return loop(folder, model_key, change=lambda t: t.T if t.dim() == 2 else t, check_shapes=False)


def casts_to_float32(folder, model_key):  # converts while loading
    return loop(folder, model_key, change=lambda t: t.float())


def ignores_model_key(folder, model_key):  # uses the released names as the model's
    return loop(folder, lambda key: key)


def swaps_gate_and_up(folder, model_key):  # a name table of its own, gate and up crossed
    def crossed(key):
        name = model_key(key)
        if ".ff_proj." in name:
            return name.replace("ff_proj", "up_proj")
        return name.replace("up_proj", "ff_proj") if ".up_proj." in name else name

    return loop(folder, crossed)


def no_shape_check(folder, model_key):  # a wrong config.json goes unnoticed
    return loop(folder, model_key, check_shapes=False)


def no_check_that_all_were_filled(folder, model_key):  # a missing tensor goes unnoticed
    return loop(folder, model_key, check_filled=False)


def extra_keys_skipped(folder, model_key):  # a tensor the model lacks is silently dropped
    model = LLaDAModel(read_hf_config(folder), device="meta")
    own = model.state_dict()
    tensors = {}
    weight_map = json.loads((Path(folder) / "model.safetensors.index.json").read_text())
    for shard in sorted(set(weight_map["weight_map"].values())):
        with safe_open(Path(folder) / shard, framework="pt") as f:
            tensors |= {model_key(k): f.get_tensor(k) for k in f.keys() if model_key(k) in own}
    model.load_state_dict(tensors, assign=True, strict=False)
    return model if not [n for n, p in model.named_parameters() if p.is_meta] else 1 / 0


FIRST = r"case 1/4 \(the 'tiny' preset in bfloat16 over 3 shards, LLaDA's layout.*\n"
LOAD_MISTAKES = [
    (skips_the_last_shard, FIRST + r"expected every parameter filled from the snapshot, but 7 of "
     r"the model's 21 tensors are still on the meta device"),
    (only_the_first_shard, FIRST + r".*still on the meta device.*Every shard the index names"),
    (transposes_the_matrices, FIRST + r"model\.transformer\.wte\.weight: expected shape \(512, "
     r"64\), got \(64, 512\): the same sizes in reverse"),
    (casts_to_float32, FIRST + r".*: expected dtype torch\.bfloat16, the one stored in the file, "
     r"got torch\.float32"),
    (ignores_model_key, r"your function raised \w+Error.*\n  on case 4/4: iLLaDA's layout"),
    (swaps_gate_and_up, FIRST + r"model\.transformer\.blocks\.0\.ff_proj\.weight: expected the "
     r"values of the snapshot's tensor.*check the name each key maps to"),
    (no_shape_check, r"config\.json says 4 key/value heads, the shards hold 2.*: expected an "
     r"error, but your function returned a model"),
    (no_check_that_all_were_filled, r"model\.transformer\.ln_f\.weight is in no shard.*: expected "
     r"an error"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", LOAD_MISTAKES, ids=ids(LOAD_MISTAKES))
def test_load_snapshot_mistake_fails(mistake, match):
    assert_fails(lesson5.check_load_snapshot, mistake, "5.4", match)


def test_a_loader_that_drops_unknown_tensors_fails():
    assert_fails(
        lesson5.check_load_snapshot,
        extra_keys_skipped,
        "5.4",
        r"config\.json says 2 blocks, the shards hold 3: block 2's tensors fit no parameter: "
        r"expected an error",
    )


# --- Exercise 5.5: measure_kv_heads --------------------------------------------------------------


def test_kv_heads_experiment_prints_the_measurement_and_no_verdict(capsys):
    assert lesson5.check_kv_heads_experiment(measure_kv_heads)
    out = capsys.readouterr().out
    assert "          32   8,015,581,184       100.0%" in out
    assert "           8   7,210,274,816        90.0%              33,554,432" in out
    assert "131,072 bytes  25.0%" in out
    assert "           1   6,975,393,792        87.0%" in out and "16,384 bytes   3.1%" in out
    for verdict in ("modest", "large", "linearly", "in proportion", "fewer parameters"):
        assert verdict not in out


def scaled(index, factor):  # one of the two measurements scaled, as a mistake would
    def measure(kv_heads):
        out = {}
        for h, pair in measure_kv_heads(kv_heads).items():
            pair = list(pair)
            pair[index] = int(pair[index] * factor)
            out[h] = tuple(pair)
        return out

    return measure


def n_kv_heads_ignored(kv_heads):  # builds llada_8b as released every time
    return {h: measure_kv_heads([32])[32] for h in kv_heads}


def one_number(kv_heads):  # the parameters only
    return {h: pair[0] for h, pair in measure_kv_heads(kv_heads).items()}


KV_MISTAKES = [
    (scaled(1, 0.5), r"n_kv_heads=32: expected 524,288 bytes of keys and values per token, got "
     r"262,144\. Half of it: a token leaves both its key and its value"),
    (scaled(1, 2), r"n_kv_heads=32: .* got 1,048,576\. Twice as much: in bf16 a value takes "
     r"2 bytes"),
    (scaled(1, 1 / 32), r"n_kv_heads=32: .* got 16,384\. One layer's worth"),
    (n_kv_heads_ignored, r"n_kv_heads=16: expected 7,478,710,272 parameters, got 8,015,581,184 "
     r"\(LLaDA-8B's own count: was n_kv_heads changed\?\)"),
    (one_number, r"n_kv_heads=32: expected a pair \(parameters, bytes of keys and values per "
     r"token\), got 8015581184"),
]  # fmt: skip


def calls_the_library(kv_heads):  # answers without measuring
    from minillada.models.sizing import count_parameters, kv_bytes_per_token

    out = {}
    for h in kv_heads:
        config = preset("llada_8b", n_kv_heads=h)
        out[h] = (count_parameters(config).total, kv_bytes_per_token(config))
    return out


def test_kv_heads_refuses_the_library_functions():
    from minillada.models.sizing import count_parameters, kv_bytes_per_token

    assert_fails(
        lesson5.check_kv_heads_experiment, calls_the_library, "5.5",
        r"your function raised RuntimeError: expected a measurement, not a call of "
        r"minillada\.models\.sizing\.count_parameters",
    )  # fmt: skip
    config = preset("llada_8b")  # both are themselves again afterwards
    assert count_parameters(config).total == 8015581184 and kv_bytes_per_token(config) == 524288


@pytest.mark.parametrize("mistake, match", KV_MISTAKES, ids=ids(KV_MISTAKES))
def test_kv_heads_mistake_fails(mistake, match):
    assert_fails(lesson5.check_kv_heads_experiment, mistake, "5.5", match)
