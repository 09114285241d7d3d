"""iLLaDA's Llama-style snapshot layout: written by the saver, read back bit-exactly, with the tied
head stored or not, the mask id from the tokenizer files, and clear errors for bad folders."""

import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from minillada.checkpoints.dialects import DIALECTS, ILLADA_NAMES, dialect_of
from minillada.checkpoints.hf import (
    HFCheckpointError,
    load_hf_checkpoint,
    read_hf_config,
    save_hf_checkpoint,
)
from minillada.models.llada import LLaDAModel, preset
from minillada.sampling.generate import generate

V = 97


def tiny(seed=0, **kw) -> LLaDAModel:
    cfg = preset(
        "illada_1b",
        d_model=32,
        n_layers=3,
        n_heads=4,
        n_kv_heads=2,
        mlp_hidden_size=48,
        vocab_size=V,
        embedding_size=V,
        max_sequence_length=32,
        **kw,
    )
    return LLaDAModel(cfg, generator=torch.Generator().manual_seed(seed)).eval()


@pytest.fixture
def snapshot(tmp_path):
    model = tiny()
    return model, save_hf_checkpoint(model, tmp_path / "illada", num_shards=3)


def test_the_saver_writes_the_llama_style_layout(snapshot):
    model, folder = snapshot
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "config.json",
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
        "model.safetensors.index.json",
    ]
    hf = json.loads((folder / "config.json").read_text())
    assert hf["model_type"] == "illada" and hf["architectures"] == ["ILLaDAForCausalLM"]
    assert hf["tie_word_embeddings"] is True and hf["num_key_value_heads"] == 2
    assert hf["hidden_size"] == 32 and hf["intermediate_size"] == 48 and hf["rope_scaling"] is None
    assert "mask_token_id" not in hf  # unknown ids are left out, never written as LLaDA's
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    keys = set(index["weight_map"])
    assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys
    assert "model.layers.2.self_attn.k_proj.weight" in keys and "model.norm.weight" in keys
    with safe_open(
        folder / index["weight_map"]["model.layers.0.self_attn.k_proj.weight"], "pt"
    ) as f:
        assert f.get_slice("model.layers.0.self_attn.k_proj.weight").get_shape() == [16, 32]
    pattern = re.compile(
        r"model\.(embed_tokens|norm|layers\.\d+\.(input_layernorm|post_attention_layernorm|"
        r"self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj))\.weight"
    )
    assert all(pattern.fullmatch(k) for k in keys), sorted(keys)


@pytest.mark.parametrize("store_tied_head", [False, True])
def test_round_trip_is_bit_exact(tmp_path, store_tied_head):
    model = tiny()
    folder = save_hf_checkpoint(
        model, tmp_path / "s", num_shards=2, store_tied_head=store_tied_head
    )
    stored = set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"])
    assert ("lm_head.weight" in stored) == store_tied_head
    loaded = load_hf_checkpoint(folder)
    assert loaded.config == model.config and loaded.config.dialect == "illada"
    assert loaded.head_weight is loaded.transformer.wte.weight  # still one tensor
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    ids = torch.randint(0, V, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(ids), loaded(ids))
    assert read_hf_config(folder) == model.config
    again = save_hf_checkpoint(loaded, tmp_path / "again", num_shards=2)
    assert json.loads((again / "config.json").read_text()) == json.loads(
        (folder / "config.json").read_text()
    )


def test_a_stored_tied_head_must_equal_the_embedding(tmp_path):
    folder = save_hf_checkpoint(tiny(), tmp_path / "s", store_tied_head=True)
    tensors = load_file(folder / "model.safetensors")
    tensors["lm_head.weight"] = tensors["lm_head.weight"].clone()
    tensors["lm_head.weight"][3, 5] += 1.0
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(
        HFCheckpointError,
        match=r"model\.safetensors: config\.json ties the output head.*'lm_head\.weight' differs "
        r"from 'model\.embed_tokens\.weight' \(max \|difference\| 1\)",
    ):
        load_hf_checkpoint(folder)


def _edit_config(folder, **changes):
    path = folder / "config.json"
    hf = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None and k.startswith("-"):
            hf.pop(k[1:], None)
        else:
            hf[k] = v
    path.write_text(json.dumps(hf))


def test_config_errors_name_the_file_and_the_field(snapshot):
    _, folder = snapshot
    cases = [
        ({"model_type": "llama"}, r"model_type 'llama'.*reads two layouts: 'llada'.*'illada'"),
        ({"num_key_value_heads": 3}, r"num_attention_heads=4 is not a multiple of num_key_va"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, r"rope_scaling=.*linear"),
        ({"-rope_theta": None}, r"lacks \['rope_theta'\].*never guesses"),
        ({"hidden_act": "gelu"}, r"hidden_act='gelu'"),
    ]
    original = (folder / "config.json").read_text()
    for changes, message in cases:
        _edit_config(folder, **changes)
        with pytest.raises(HFCheckpointError, match=f"config.json.*{message}|{message}") as err:
            load_hf_checkpoint(folder)
        assert str(folder / "config.json") in str(err.value), err.value
        (folder / "config.json").write_text(original)
    _edit_config(folder, rope_scaling={"rope_type": "default"})  # what transformers writes for none
    assert load_hf_checkpoint(folder).config.rope_theta == 10_000.0


def test_an_untied_config_needs_a_head_tensor(snapshot):
    _, folder = snapshot
    _edit_config(folder, tie_word_embeddings=False)
    with pytest.raises(
        HFCheckpointError, match=r"says the output head is untied.*'lm_head\.weight'"
    ):
        load_hf_checkpoint(folder)


def test_an_untied_illada_style_model_round_trips(tmp_path):
    model = tiny(weight_tying=False)
    folder = save_hf_checkpoint(model, tmp_path / "untied")
    keys = load_file(folder / "model.safetensors").keys()
    assert "lm_head.weight" in keys
    loaded = load_hf_checkpoint(folder)
    assert torch.equal(loaded.head_weight, model.head_weight)
    assert loaded.head_weight is not loaded.transformer.wte.weight


def test_a_tied_model_cannot_be_written_in_llada_s_layout(tmp_path):
    with pytest.raises(ValueError, match="LLaDA's released layout has an untied head"):
        save_hf_checkpoint(tiny(), tmp_path / "x", dialect="llada")


def test_the_mask_id_comes_from_the_tokenizer_files(snapshot, illada_tokenizer):
    model, folder = snapshot
    illada_tokenizer(folder)
    loaded = load_hf_checkpoint(folder)
    assert loaded.config.mask_token_id == 5  # iLLaDA's published id, read from the files
    assert loaded.config.eos_token_id == 2
    prompt = torch.tensor([[7, 8, 9]])
    out = generate(loaded, prompt, 8, 8, 8)  # no mask_id: the model's own
    assert torch.equal(out, generate(loaded, prompt, 8, 8, 8, 5))
    with pytest.raises(ValueError, match=r"mask_id=126336 is not this model's mask token.*says 5"):
        generate(loaded, prompt, 8, 8, 8, 126336)  # LLaDA's default: an ordinary word here


def test_a_config_and_tokenizer_that_disagree_are_refused(snapshot, illada_tokenizer):
    _, folder = snapshot
    illada_tokenizer(folder)
    _edit_config(folder, mask_token_id=6)
    with pytest.raises(HFCheckpointError, match=r"says mask_token_id=6 but the tokenizer files"):
        load_hf_checkpoint(folder)


def test_dialect_tables_cover_every_parameter_once():
    model = tiny()
    names = DIALECTS["illada"]
    released = [names.to_released_key(k) for k in model.state_dict()]
    assert len(set(released)) == len(released)
    assert all(
        names.to_model_key(r) == k for r, k in zip(released, model.state_dict(), strict=True)
    )
    assert len(ILLADA_NAMES) == 12 and dialect_of({"model_type": "illada"}).name == "illada"
    with pytest.raises(ValueError, match="model_type None .* reads two layouts"):
        dialect_of({})
