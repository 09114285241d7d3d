"""Stand-ins for the released models: each loads and is labelled as a stand-in, is written in its
model's layout (iLLaDA: Llama-style, two shards, tied, GQA, mask id 5, ``</think>``; LLaDA:
OLMo-style, lesson 6's model), and is written byte for byte the same every time."""

import json

import pytest
import torch
from safetensors import safe_open

from minillada.checkpoints.released import load_released
from minillada.checkpoints.shipped import load_instruct_shakespeare
from minillada.checkpoints.standins import (
    STAND_IN_FIELD,
    STANDIN_NAMES,
    stand_in_description,
    write_standin,
)
from minillada.data.chat import ChatTemplateError, render_jinja_chat

ILLADA = ("iLLaDA-8B-Instruct", "iLLaDA-8B-Base")
SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
FILES = sorted(
    [
        "config.json",
        "model.safetensors.index.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        *SHARDS,
    ]
)


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("standins")
    return {name: write_standin(name, root / name) for name in STANDIN_NAMES}


@pytest.mark.parametrize("name", STANDIN_NAMES)
def test_every_stand_in_loads_and_is_labelled(standins, name):
    loaded = load_released(standins[name], name)
    assert loaded.report.ok, loaded.report.problems
    assert loaded.report.stand_in == stand_in_description(standins[name])
    assert loaded.report.stand_in and "minillada.checkpoints.standins" in loaded.report.stand_in
    assert loaded.report.name == f"stand-in for {name}" and loaded.name == loaded.report.name
    assert f"STAND-IN     {loaded.report.stand_in}" in str(loaded.report)
    assert loaded.instruct == name.endswith("Instruct")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert sorted(p.name for p in standins[name].iterdir()) == FILES


@pytest.mark.parametrize("name", ILLADA)
def test_illada_stand_ins_have_illadas_layout_in_miniature(standins, name):
    folder = standins[name]
    hf = json.loads((folder / "config.json").read_text())
    assert hf["model_type"] == "illada" and hf["architectures"] == ["ILLaDAForCausalLM"]
    assert hf["tie_word_embeddings"] is True
    assert (hf["num_attention_heads"], hf["num_key_value_heads"]) == (4, 2)  # GQA, 2 per kv head
    assert hf["minillada_variant"] == ("instruct" if name.endswith("Instruct") else "base")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == SHARDS
    keys = set(index["weight_map"])
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys  # tied: not stored
    assert "model.layers.1.self_attn.k_proj.weight" in keys and "model.norm.weight" in keys
    assert not any(k.startswith("model.transformer.") for k in keys)
    k_key = "model.layers.0.self_attn.k_proj.weight"
    with safe_open(folder / index["weight_map"][k_key], "pt") as f:
        assert f.get_slice(k_key).get_shape() == [2 * 16, 64]  # 2 kv heads of 16 x width 64
        assert f.get_slice(k_key).get_dtype() == "BF16"

    loaded = load_released(folder, name, dtype=torch.float32)
    config, tok = loaded.model.config, loaded.tokenizer
    assert config.dialect == "illada" and config.weight_tying
    assert (config.n_heads, config.kv_heads) == (4, 2)
    assert loaded.model.head_weight is loaded.model.transformer.wte.weight
    assert tok.tokenizer.token_to_id("<[MASK]>") == 5
    assert tok.mask_id == 5 == config.mask_token_id == loaded.report.mask_id
    assert loaded.think_end_ids == [tok.tokenizer.token_to_id("</think>")] == [6]
    assert loaded.report.think_end_ids == [6]
    if name.endswith("Instruct"):
        assert tok.chat_template is not None and loaded.report.has_chat_template
        with pytest.raises(ChatTemplateError, match="System role not supported"):
            render_jinja_chat(tok.chat_template, [{"role": "system", "content": "x"}], "<s>", "")
        text = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
        assert text == "<s><|user|>\nHi\n<|assistant|>\n<think>\n"
    else:
        assert tok.chat_template is None and not loaded.report.has_chat_template


def test_the_llada_stand_in_is_lesson_6s_model_in_the_olmo_layout(standins):
    folder = standins["LLaDA-8B-Instruct"]
    hf = json.loads((folder / "config.json").read_text())
    assert hf["model_type"] == "llada" and hf["architectures"] == ["LLaDAModelLM"]
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == SHARDS
    assert "model.transformer.blocks.0.q_proj.weight" in index["weight_map"]
    assert not any(k.startswith("model.layers.") for k in index["weight_map"])

    loaded = load_released(folder, "LLaDA-8B-Instruct")
    shipped, shipped_tok, _ = load_instruct_shakespeare()
    assert loaded.model.config.dialect == "llada"
    assert loaded.model.config.differences(shipped.config) == []
    ours = loaded.model.state_dict()
    theirs = shipped.to(torch.bfloat16).state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == torch.bfloat16 and torch.equal(ours[key], value), key
    assert loaded.tokenizer.mask_id == shipped_tok.mask_id == loaded.report.mask_id
    assert loaded.tokenizer.chat_template == shipped_tok.chat_template is not None
    assert loaded.report.think_end_ids is None  # LLaDA does not think


@pytest.mark.parametrize("name", STANDIN_NAMES)
def test_writing_twice_gives_the_same_files(tmp_path, name):
    one = write_standin(name, tmp_path / "one")
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "stale.txt").write_text("replaced")  # an existing folder is replaced
    two = write_standin(name, tmp_path / "two")
    assert sorted(p.name for p in two.iterdir()) == FILES
    for file in FILES:
        assert (one / file).read_bytes() == (two / file).read_bytes(), file


def test_the_seed_changes_only_the_weights(tmp_path):
    zero = write_standin("iLLaDA-8B-Base", tmp_path / "zero", seed=0)
    one = write_standin("iLLaDA-8B-Base", tmp_path / "one", seed=1)
    for file in FILES:
        same = (zero / file).read_bytes() == (one / file).read_bytes()
        assert same == (not file.endswith(".safetensors")), file


def test_an_unknown_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"No stand-in for 'iLLaDA-8B'.*stand-ins for"):
        write_standin("iLLaDA-8B", tmp_path / "x")
    with pytest.raises(ValueError, match="No stand-in for 'LLaDA-8B-Base'"):
        write_standin("LLaDA-8B-Base", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_stand_in_description_is_none_for_real_weights(tmp_path, standins):
    assert stand_in_description(tmp_path) is None  # no config.json
    hf = json.loads((standins["iLLaDA-8B-Base"] / "config.json").read_text())
    del hf[STAND_IN_FIELD]
    (tmp_path / "config.json").write_text(json.dumps(hf))
    assert stand_in_description(tmp_path) is None
