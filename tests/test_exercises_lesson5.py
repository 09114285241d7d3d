"""Lesson 5's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import json
import struct

import pytest
import torch

from minillada.exercises import ExerciseFailed, lesson5

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def llada_parameters(config):
    D, F_, V = config.d_model, config.hidden_size, config.vocab_rows
    Dkv = config.kv_heads * config.head_dim
    per_block = 2 * D + 2 * D * D + 2 * Dkv * D + 3 * D * F_
    return 2 * V * D + config.n_layers * per_block + D


def block_keys(config, n):
    D, F_, Dkv = config.d_model, config.hidden_size, config.kv_heads * config.head_dim
    shapes = {
        "attn_norm": (D,), "q_proj": (D, D), "k_proj": (Dkv, D), "v_proj": (Dkv, D),
        "attn_out": (D, D), "ff_norm": (D,), "ff_proj": (F_, D), "up_proj": (F_, D),
        "ff_out": (D, F_),
    }  # fmt: skip
    return {f"model.transformer.blocks.{n}.{name}.weight": s for name, s in shapes.items()}


def read_tensor(path, key):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        info = json.loads(f.read(n))[key]
        start, end = info["data_offsets"]
        f.seek(8 + n + start)
        raw = bytearray(f.read(end - start))
    return torch.frombuffer(raw, dtype=DTYPES[info["dtype"]]).reshape(info["shape"])


def test_solutions_pass(capsys):
    assert lesson5.check_parameter_count(llada_parameters)
    assert lesson5.check_block_keys(block_keys)
    assert lesson5.check_read_tensor(read_tensor)
    assert capsys.readouterr().out.count("passed") == 3


def test_stubs_are_not_attempted(capsys):
    def stub(*args):
        raise NotImplementedError("Exercise 5.x: ...")

    for checker in (
        lesson5.check_parameter_count,
        lesson5.check_block_keys,
        lesson5.check_read_tensor,
    ):
        assert not checker(stub)
    assert capsys.readouterr().out.count("not attempted yet") == 3


def test_common_mistakes_fail():
    def tied_head(config):  # forgets that LLaDA's output head is not the embedding
        return llada_parameters(config) - config.vocab_rows * config.d_model

    with pytest.raises(ExerciseFailed, match="Exercise 5.1: case 1/6"):
        lesson5.check_parameter_count(tied_head)

    def no_gqa(config, n):  # k/v as wide as q, wrong once n_kv_heads < n_heads
        out = block_keys(config, n)
        for p in "kv":
            out[f"model.transformer.blocks.{n}.{p}_proj.weight"] = (config.d_model,) * 2
        return out

    with pytest.raises(ExerciseFailed, match="case 4/4"):
        lesson5.check_block_keys(no_gqa)

    def transposed(config, n):
        out = block_keys(config, n)
        key = f"model.transformer.blocks.{n}.ff_out.weight"
        out[key] = out[key][::-1]
        return out

    with pytest.raises(ExerciseFailed, match="ff_out.weight: expected shape"):
        lesson5.check_block_keys(transposed)

    def forgets_the_header(path, key):  # offsets counted from the start of the file
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            info = json.loads(f.read(n))[key]
            start, end = info["data_offsets"]
            f.seek(start)
            raw = bytearray(f.read(end - start))
        return torch.frombuffer(raw, dtype=DTYPES[info["dtype"]]).reshape(info["shape"])

    with pytest.raises(ExerciseFailed, match="values differ"):
        lesson5.check_read_tensor(forgets_the_header)

    def always_float(path, key):
        return read_tensor(path, key).float()

    with pytest.raises(ExerciseFailed, match="expected dtype torch.bfloat16"):
        lesson5.check_read_tensor(always_float)
