"""The Hugging Face snapshot format: save -> load round trips, released layout, and every error."""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from minillada.checkpoints import hf as hf_checkpoint
from minillada.checkpoints.hf import (
    INDEX_NAME,
    NAME_MAP,
    HFCheckpointError,
    hf_to_model_key,
    load_hf_checkpoint,
    model_to_hf_key,
    read_hf_config,
    save_hf_checkpoint,
    shard_name,
)
from minillada.models.llada import LLaDAModel, preset


def tiny_model(**kw) -> LLaDAModel:
    cfg = preset("tiny", vocab_size=97, embedding_size=97, max_sequence_length=64, **kw)
    return LLaDAModel(cfg, generator=torch.Generator().manual_seed(0)).eval()


@pytest.fixture
def snapshot(tmp_path: Path) -> tuple[LLaDAModel, Path]:
    model = tiny_model(n_kv_heads=2)
    return model, save_hf_checkpoint(model, tmp_path / "snap", num_shards=3)


def shard_of(folder: Path, key: str) -> Path:
    return folder / json.loads((folder / INDEX_NAME).read_text())["weight_map"][key]


def rewrite_shard(folder: Path, key: str, value: torch.Tensor | None, index_too: bool = True):
    """Replace (or with None delete) one tensor of a snapshot, and its index entry."""
    index = json.loads((folder / INDEX_NAME).read_text())
    fname = index["weight_map"].get(key) or shard_name(1, 3)
    tensors = load_file(folder / fname)
    if value is None:
        tensors.pop(key)
        index["weight_map"].pop(key)
    else:
        tensors[key] = value
        index["weight_map"][key] = fname
    save_file(tensors, folder / fname, metadata={"format": "pt"})
    if index_too:
        (folder / INDEX_NAME).write_text(json.dumps(index))
    return folder / fname


def test_name_map_is_one_table_and_identity():
    assert len(NAME_MAP) == 12  # 10 per-block entries + wte, ln_f, head (attn+mlp in one block)
    for key in LLaDAModel(preset("llada_8b"), device="meta").state_dict():
        assert model_to_hf_key(key) == key and hf_to_model_key(key) == key
    assert hf_to_model_key("model.transformer.blocks.3.lora_A.weight") is None


def test_sharded_round_trip_is_exact_and_in_the_released_layout(snapshot):
    model, folder = snapshot
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(["config.json", INDEX_NAME] + [shard_name(i, 3) for i in (1, 2, 3)])
    assert shard_name(1, 6) == "model-00001-of-00006.safetensors"
    index = json.loads((folder / INDEX_NAME).read_text())
    sd = model.state_dict()
    assert set(index["weight_map"]) == set(sd)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in sd.values())
    with safe_open(folder / shard_name(1, 3), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
    assert json.loads((folder / "config.json").read_text()) == model.config.to_hf_config()

    loaded = load_hf_checkpoint(folder)
    assert loaded.config == model.config
    for key, t in loaded.state_dict().items():
        assert t.dtype == sd[key].dtype and torch.equal(t, sd[key]), key
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))
    for path in folder.glob("model-*.safetensors"):  # zero the tensor data in place...
        with open(path, "r+b") as f:
            f.seek(-4096, 2)
            f.write(bytes(4096))
    with torch.no_grad():  # ...the loaded model owns its memory (no view of the old files)
        assert torch.equal(loaded(ids), model(ids))


def test_single_file_bf16_and_dtype_conversion(tmp_path):
    model = tiny_model()
    folder = save_hf_checkpoint(model, tmp_path, num_shards=1, dtype=torch.bfloat16)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    bf16 = load_hf_checkpoint(folder, checkpoint_dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    assert torch.equal(bf16.transformer.wte.weight, model.transformer.wte.weight.bfloat16())
    up = load_hf_checkpoint(folder, dtype=torch.float32)  # converted tensor by tensor
    assert torch.equal(up.transformer.wte.weight, model.transformer.wte.weight.bfloat16().float())
    assert not any(p.is_meta for p in up.parameters())


def test_max_shard_size_decides_the_number_of_shards(tmp_path):
    model = tiny_model()
    total = sum(t.numel() * 4 for t in model.state_dict().values())
    folder = save_hf_checkpoint(model, tmp_path, max_shard_size=total // 4 + 1)
    assert len(list(folder.glob("model-*-of-00004.safetensors"))) == 4
    save_hf_checkpoint(model, tmp_path, num_shards=2)  # re-saving replaces the old shards
    assert sorted(p.name for p in folder.glob("model*.safetensors")) == [
        shard_name(1, 2), shard_name(2, 2)
    ]  # fmt: skip
    assert load_hf_checkpoint(folder).num_parameters() == model.num_parameters()


def test_loader_streams_one_shard_at_a_time(snapshot, monkeypatch):
    _, folder = snapshot
    open_now, most = [0], [0]
    real = hf_checkpoint.safe_open

    class Counting:
        def __init__(self, *a, **kw):
            self.f = real(*a, **kw)

        def __enter__(self):
            open_now[0] += 1
            most[0] = max(most[0], open_now[0])
            return self.f.__enter__()

        def __exit__(self, *exc):
            open_now[0] -= 1
            return self.f.__exit__(*exc)

    monkeypatch.setattr(hf_checkpoint, "safe_open", Counting)
    import safetensors.torch

    def whole_file(*args, **kwargs):
        raise AssertionError("the loader read a whole shard with load_file")

    monkeypatch.setattr(safetensors.torch, "load_file", whole_file)  # it streams tensor by tensor
    load_hf_checkpoint(folder)
    assert most[0] == 1


# ---------------------------------------------------------------------------------------------
# Errors: each names the file and the tensor, and says what to do
# ---------------------------------------------------------------------------------------------


def test_missing_shard(snapshot):
    _, folder = snapshot
    shard_name_2 = shard_name(2, 3)
    (folder / shard_name_2).unlink()
    with pytest.raises(HFCheckpointError, match=f"Missing shard.*{re.escape(shard_name_2)}"):
        load_hf_checkpoint(folder)


def test_unknown_key(snapshot):
    _, folder = snapshot
    rewrite_shard(folder, "model.transformer.blocks.7.q_proj.weight", torch.zeros(64, 64))
    with pytest.raises(HFCheckpointError, match=r"Unknown key 'model.transformer.blocks.7.q_proj"):
        load_hf_checkpoint(folder)


def test_unknown_key_in_a_shard_but_not_in_the_index(snapshot):
    _, folder = snapshot
    path = rewrite_shard(folder, "lm_head.bias", torch.zeros(97), index_too=False)
    with pytest.raises(
        HFCheckpointError, match=f"Unknown key 'lm_head.bias' in {re.escape(str(path))}"
    ):
        load_hf_checkpoint(folder)


def test_missing_key(snapshot):
    _, folder = snapshot
    rewrite_shard(folder, "model.transformer.blocks.1.up_proj.weight", None)
    with pytest.raises(HFCheckpointError, match=r"Missing key.*blocks\.1\.up_proj\.weight"):
        load_hf_checkpoint(folder)


def test_index_lists_a_tensor_the_shard_lacks(snapshot):
    _, folder = snapshot
    key = "model.transformer.ln_f.weight"
    index = json.loads((folder / INDEX_NAME).read_text())
    other = next(
        shard_name(i, 3) for i in (1, 2, 3) if shard_name(i, 3) != shard_of(folder, key).name
    )
    index["weight_map"][key] = other
    (folder / INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(
        HFCheckpointError, match="Missing key: the index says 'model.transformer.ln_f"
    ):
        load_hf_checkpoint(folder)


def test_wrong_shape(snapshot):
    _, folder = snapshot
    key = "model.transformer.blocks.0.ff_proj.weight"
    path = rewrite_shard(folder, key, torch.zeros(100, 64))
    with pytest.raises(
        HFCheckpointError, match=f"Wrong shape for '{key}' in {re.escape(str(path))}"
    ):
        load_hf_checkpoint(folder)


@pytest.mark.parametrize("bad", [torch.float16, torch.int32])
def test_wrong_dtype(snapshot, bad):
    model, folder = snapshot
    key = "model.transformer.blocks.1.attn_norm.weight"
    rewrite_shard(folder, key, model.state_dict()[key].to(bad))
    with pytest.raises(HFCheckpointError, match=f"Wrong dtype for '{key}'"):
        load_hf_checkpoint(folder)


def test_wrong_dtype_against_the_expected_checkpoint_dtype(snapshot):
    _, folder = snapshot
    with pytest.raises(HFCheckpointError, match=r"Wrong dtype .*F32, expected torch.bfloat16"):
        load_hf_checkpoint(folder, checkpoint_dtype=torch.bfloat16)


def test_config_mismatch(snapshot):
    model, folder = snapshot
    with pytest.raises(HFCheckpointError, match="config mismatch.*n_layers: 3 vs 2"):
        load_hf_checkpoint(folder, config=preset("tiny", vocab_size=97, n_layers=3))
    hf = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**hf, "activation_type": "gelu"}))
    with pytest.raises(HFCheckpointError, match="config mismatch in .*activation_type='gelu'"):
        load_hf_checkpoint(folder)
    (folder / "config.json").write_text(json.dumps({**hf, "mlp_hidden_size": 100}))
    with pytest.raises(HFCheckpointError, match="Wrong shape .*config.json does not match"):
        load_hf_checkpoint(folder)
    (folder / "config.json").write_text(json.dumps({**hf, "n_layers": 1}))
    with pytest.raises(HFCheckpointError, match=r"Unknown key .*blocks\.1\..*n_layers"):
        load_hf_checkpoint(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(HFCheckpointError, match="is not valid JSON"):
        read_hf_config(folder)


def test_not_a_snapshot(tmp_path, snapshot):
    with pytest.raises(
        HFCheckpointError, match="not a Hugging Face snapshot folder.*does not exist"
    ):
        load_hf_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HFCheckpointError, match="there is no config.json"):
        load_hf_checkpoint(tmp_path / "empty")
    cache = tmp_path / "models--GSAI-ML--LLaDA-8B-Instruct"
    (cache / "snapshots").mkdir(parents=True)
    with pytest.raises(HFCheckpointError, match="Hugging Face cache folder"):
        load_hf_checkpoint(cache)
    lesson1 = tmp_path / "lesson1"
    lesson1.mkdir()
    (lesson1 / "config.json").write_text(json.dumps({"format": "minillada-checkpoint"}))
    (lesson1 / "model.safetensors").write_bytes(b"")
    with pytest.raises(HFCheckpointError, match="lesson-1 minillada checkpoint"):
        load_hf_checkpoint(lesson1)
    _, folder = snapshot
    for p in folder.glob("model*"):
        p.unlink()
    with pytest.raises(HFCheckpointError, match="neither model.safetensors.index.json nor"):
        load_hf_checkpoint(folder)


def test_corrupt_shard(snapshot):
    _, folder = snapshot
    (folder / shard_name(1, 3)).write_bytes(b"\x00" * 16)
    with pytest.raises(HFCheckpointError, match="not a readable safetensors file"):
        load_hf_checkpoint(folder)
