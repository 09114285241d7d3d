"""Rehearsal snapshots and the real-weights branch: the released layouts written file for file, the
folders found where downloads put them, the opt-in, and every bad input refused before a weight
is read, with a message that says what would work."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import torch

import minillada.checkpoints.devices as devices
import minillada.checkpoints.released as released_module
from minillada.checkpoints.devices import (
    DeviceError,
    check_device,
    cpu_minutes_per_answer,
    device_advice,
    memory_needed,
    positions_per_answer,
)
from minillada.checkpoints.hf import INDEX_NAME, read_weight_map
from minillada.checkpoints.rehearsal import (
    REHEARSAL_ENV,
    write_rehearsal,
    write_rehearsals,
)
from minillada.checkpoints.released import (
    SnapshotError,
    inspect_snapshot,
    load_released,
    open_released,
    released_folder,
)
from minillada.checkpoints.standins import STAND_IN_FIELD
from minillada.data.chat import answer_after_thinking
from minillada.models.llada import preset
from minillada.models.sizing import count_parameters, forward_flops
from minillada.sampling.answer import (
    ILLADA_INSTRUCT,
    LLADA_INSTRUCT,
    GenerationSettings,
    generate_answer,
)

ROOT = Path(__file__).resolve().parents[2]
INSTRUCT = "iLLaDA-8B-Instruct"
FAST_CPU = 1e11  # FLOP/s, instead of measuring the CPU in every test


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    return root, write_rehearsals(root, "local", 0)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    return root, write_rehearsals(root, "hub-cache", 1)


@pytest.fixture
def opt_in(monkeypatch):
    monkeypatch.setenv(REHEARSAL_ENV, "1")


@pytest.fixture
def no_opt_in(monkeypatch):
    monkeypatch.delenv(REHEARSAL_ENV, raising=False)


@pytest.fixture(autouse=True)
def fast_advice(monkeypatch):
    monkeypatch.setattr(devices, "cpu_flops_per_second", lambda *a, **k: FAST_CPU)


def _copy(folder: Path, tmp_path: Path) -> Path:
    """A plain copy of a snapshot (symlinks followed), safe to break."""
    out = tmp_path / folder.name
    out.mkdir()
    for f in folder.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


# ---- the layouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["local", "hub"])
def test_rehearsals_are_laid_out_as_a_download(which, local, hub):
    _, folders = local if which == "local" else hub
    for name, folder in folders.items():
        index = json.loads((folder / INDEX_NAME).read_text())
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) >= 3 and all(re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", s)
                                        for s in shards)  # fmt: skip
        sizes = [(folder / s).stat().st_size for s in shards]
        assert len(set(sizes)) == len(sizes), sizes  # not equal
        config = json.loads((folder / "config.json").read_text())
        assert STAND_IN_FIELD not in config  # nothing says "stand-in"
        assert {"architectures", "auto_map", "transformers_version", "use_cache"} <= set(config)
        if name.startswith("iLLaDA"):
            assert {"attention_dropout", "initializer_range", "rope_scaling"} <= set(config)
            assert config["layer_norm_eps"] is None and config["rope_scaling"] is None
            assert ("torch_dtype" if which == "local" else "dtype") in config
        for f in ("generation_config.json", "tokenizer.json", "special_tokens_map.json"):
            assert (folder / f).is_file(), f
        tok_config = json.loads((folder / "tokenizer_config.json").read_text())
        assert tok_config["added_tokens_decoder"]
        if name == INSTRUCT:
            assert "raise_exception" in tok_config["chat_template"]
    eos = json.loads((folders[INSTRUCT] / "generation_config.json").read_text())["eos_token_id"]
    assert isinstance(eos, list if which == "hub" else int)


def test_the_hub_cache_layout_links_into_blobs(hub):
    root, folders = hub
    folder = folders[INSTRUCT]
    repo = root / "models--GSAI-ML--iLLaDA-8B-Instruct"
    assert folder.parent.parent == repo and (repo / "refs" / "main").read_text() == folder.name
    for f in folder.iterdir():
        assert f.is_symlink() and f.resolve().parent == (repo / "blobs").resolve()


def test_released_folder_finds_both_layouts(local, hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("MINILLADA_WEIGHTS_DIR", str(local[0]))
    assert released_folder(INSTRUCT) == local[1][INSTRUCT]
    monkeypatch.setenv("MINILLADA_WEIGHTS_DIR", str(hub[0]))
    assert released_folder(INSTRUCT) == hub[1][INSTRUCT]
    monkeypatch.setenv("MINILLADA_WEIGHTS_DIR", str(tmp_path / "nothing"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub[0]))  # where `hf download` puts files
    assert released_folder(INSTRUCT) == hub[1][INSTRUCT]
    repo = hub[0] / "models--GSAI-ML--iLLaDA-8B-Instruct"
    assert released_folder(INSTRUCT, repo) == hub[1][INSTRUCT]  # the repository folder, followed
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert released_folder(INSTRUCT) == tmp_path / "nothing" / INSTRUCT  # for the message


# ---- what the files say, read rather than assumed ------------------------------------------------


@pytest.mark.parametrize("which", ["local", "hub"])
def test_stop_rules_and_think_ids_come_from_the_files(which, local, hub, opt_in):
    folders = (local if which == "local" else hub)[1]
    report = inspect_snapshot(folders[INSTRUCT], INSTRUCT)
    assert report.ok, report.problems
    tok = report.tokenizer
    end = tok.tokenizer.token_to_id("<|im_end|>")
    assert report.end_of_turn == "<|im_end|>"
    assert end in report.stop_ids and tok.eos_id in report.stop_ids
    if which == "local":  # </think> is one token there
        assert report.think_end_ids == [tok.tokenizer.token_to_id("</think>")]
    else:  # </think> is not a token of its own there
        assert len(report.think_end_ids) > 1
        assert tok.decode(report.think_end_ids) == "</think>"
    assert f"stops        at ids {report.stop_ids}, end of turn '<|im_end|>'" in str(report)


def test_a_multi_token_think_end_is_boosted_and_cut_on_text(hub, opt_in):
    loaded = load_released(hub[1][INSTRUCT], INSTRUCT, "cpu", torch.float32)
    ids = loaded.think_end_ids
    assert len(ids) > 1
    prompt = loaded.chat_prompt([{"role": "user", "content": "What is 2 + 2?"}])
    settings = GenerationSettings(64, 32, 32, variable_length=True, think_end_boost=1e4,
                                  think_end_power=0.0)  # fmt: skip
    answer = generate_answer(loaded.model, loaded.tokenizer, prompt, settings)
    # a boost this large writes the whole sequence at the first masked positions of the block
    assert answer.generated[: len(ids)].tolist() == ids
    assert answer_after_thinking("a</think>b</think> 42") == "42"


def test_an_eos_list_in_config_json_loads(hub, opt_in):
    loaded = load_released(hub[1][INSTRUCT], INSTRUCT, "cpu", torch.float32)
    listed = json.loads((hub[1][INSTRUCT] / "config.json").read_text())["eos_token_id"]
    assert isinstance(listed, list) and loaded.model.config.eos_token_id == loaded.tokenizer.eos_id
    assert set(listed) <= set(loaded.tokenizer.stop_ids)


# ---- the opt-in ----------------------------------------------------------------------------------


def test_without_the_opt_in_a_rehearsal_is_refused_as_another_model(local, no_opt_in):
    report = inspect_snapshot(local[1][INSTRUCT], INSTRUCT)
    assert not report.ok
    (problem,) = report.problems
    assert "published architecture" in problem and f"{REHEARSAL_ENV}=1" in problem


def test_with_the_opt_in_it_is_a_note_and_loads(local, opt_in):
    report = inspect_snapshot(local[1][INSTRUCT], INSTRUCT)
    assert report.ok and report.stand_in is None
    assert any("going on" in n for n in report.notes)
    assert "NOTE         " in str(report)


def test_open_released_on_a_cpu_without_the_opt_in_says_what_would_work(
    local, no_opt_in, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("MINILLADA_WEIGHTS_DIR", str(local[0]))
    # the architecture check would refuse the rehearsal first: let only the CPU stand in the way
    monkeypatch.setattr(released_module, "rehearsal_allowed", lambda: False)
    real = inspect_snapshot(local[1][INSTRUCT], INSTRUCT, rehearsal=True)
    inspect = released_module.inspect_snapshot
    monkeypatch.setattr(
        released_module,
        "inspect_snapshot",
        lambda folder, *a, **k: real if folder == real.folder else inspect(folder, *a, **k),
    )
    loaded = open_released(INSTRUCT, "cpu", tmp_path / "standins")
    out = capsys.readouterr().out
    assert loaded.report.stand_in is not None and "STAND-IN" in out
    assert "there is no GPU" in out and "What would run it" in out
    assert f"{REHEARSAL_ENV}=1" in out and "minutes per 600-token answer" in out


def test_open_released_with_the_opt_in_takes_the_real_branch(local, opt_in, monkeypatch,
                                                             tmp_path, capsys):  # fmt: skip
    monkeypatch.setenv("MINILLADA_WEIGHTS_DIR", str(local[0]))
    loaded = open_released(INSTRUCT, "cpu", tmp_path / "standins")
    out = capsys.readouterr().out
    assert loaded.report.stand_in is None and "STAND-IN" not in out
    assert f"REHEARSAL    {INSTRUCT}" in out and loaded.name == INSTRUCT
    assert next(loaded.model.parameters()).dtype == torch.float32  # small: float32 on a CPU


# ---- the device ----------------------------------------------------------------------------------


def _fake_gpu(monkeypatch, name, free_gib, capability):
    facts = (name, int(free_gib * 2**30), int(free_gib * 2**30), capability)
    monkeypatch.setattr(devices, "_gpu_facts", lambda device: facts)


def test_a_gpu_without_bf16_falls_back_to_the_stand_in_and_says_what_would_work(
    local, opt_in, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("MINILLADA_WEIGHTS_DIR", str(local[0]))
    _fake_gpu(monkeypatch, "Tesla T4", 15.0, (7, 5))
    loaded = open_released(INSTRUCT, "cuda", tmp_path / "standins")
    out = capsys.readouterr().out
    assert "Tesla T4 (compute capability 7.5) cannot compute in bfloat16" in out
    assert "What would run it" in out and "RTX 3090 / 4090" in out
    assert loaded.report.stand_in is not None and loaded.model_device.type == "cpu"


def test_a_gpu_too_small_for_the_8b_model_is_refused_with_its_numbers(monkeypatch):
    config = preset("illada_8b", rope_theta=5e5, rms_norm_eps=1e-5)
    _fake_gpu(monkeypatch, "NVIDIA GeForce RTX 4080", 16.0, (8, 9))
    with pytest.raises(DeviceError, match=r"RTX 4080 has 16.0 GiB free .* needs about 1\d.\d GiB"):
        check_device(config, "cuda")
    need = memory_needed(config) / 2**30
    advice = device_advice(config, flops_per_second=FAST_CPU)
    assert f"{need:.1f} GiB free" in advice and "RTX 4080" not in advice
    assert "L4" not in advice if need > 22 else "L4" in advice
    assert "A100 80GB / H100" in advice and "minutes per 600-token answer" in advice


def test_cpu_minutes_come_from_the_flops_of_every_pass():
    config = preset("illada_8b", rope_theta=5e5, rms_norm_eps=1e-5)
    lengths = positions_per_answer(150, 600, 32)
    assert len(lengths) == 608 and lengths[0] == 182 and lengths[-1] == 150 + 608
    minutes = cpu_minutes_per_answer(config, 1e12)
    flops = sum(forward_flops(config, L) for L in lengths)
    assert minutes == pytest.approx(flops / 1e12 / 60)
    # the matrix products dominate: about 2 x parameters per position
    per_position = forward_flops(config, 1000) / 1000
    assert 2 * count_parameters(config).total < per_position < 2.2 * count_parameters(config).total


def test_forward_flops_count_the_square_of_attention():
    config = preset("illada_8b", rope_theta=5e5, rms_norm_eps=1e-5)
    linear = 2 * forward_flops(config, 1000) - forward_flops(config, 2000)
    assert linear == -4 * config.n_layers * (2000**2 - 2 * 1000**2) * config.d_model


# ---- bad input, before any weight is read --------------------------------------------------------


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _mask_override(folder):
    return {"mask_id": 7}, ["mask_id=7", "the id 5"]


def _raising_template(folder):
    _edit_json(folder / "tokenizer_config.json", chat_template="{{ raise_exception('No chats.') }}")
    return {}, ["cannot render one user question", "No chats."]


def _generation_config_disagrees(folder):
    _edit_json(folder / "generation_config.json", eos_token_id=9)
    return {}, ["generation_config.json", "config.json"]


def _unknown_model_type(folder):
    _edit_json(folder / "config.json", model_type="llama", architectures=["LlamaForCausalLM"])
    return {}, ["model_type 'llama'", "reads two layouts", "autoregressive"]


BAD = {
    "mask override": _mask_override,
    "template raises": _raising_template,
    "generation config": _generation_config_disagrees,
    "model type": _unknown_model_type,
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_snapshots_are_refused_before_a_weight_is_read(case, local, opt_in, tmp_path,
                                                           monkeypatch):  # fmt: skip
    folder = _copy(local[1][INSTRUCT], tmp_path)
    kwargs, needles = BAD[case](folder)

    def no_weights(*args, **kw):
        raise AssertionError("weights were read")

    monkeypatch.setattr(released_module, "load_hf_checkpoint", no_weights)
    with pytest.raises(SnapshotError) as err:
        load_released(folder, INSTRUCT, **kwargs)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


# ---- the command lines on rehearsals -------------------------------------------------------------


@pytest.mark.parametrize(
    "model, flags, settings",
    [
        (INSTRUCT, ["-v"], ILLADA_INSTRUCT),  # budget 2048, blocks of 32, the boost
        ("LLaDA-8B-Instruct", [], LLADA_INSTRUCT),  # a fixed canvas of 256, 256 steps
    ],
)
def test_the_chat_command_answers_with_its_defaults(model, flags, settings, local, opt_in,
                                                    monkeypatch, capsys):  # fmt: skip
    from minillada.cli.chat import main

    monkeypatch.setenv("MINILLADA_WEIGHTS_DIR", str(local[0]))
    monkeypatch.setattr("sys.stdin", io.StringIO("What is 2+2?\n\n"))
    replies = main(["--model", model, "--device", "cpu", *flags])
    out = capsys.readouterr().out
    assert len(replies) == 1 and out.count("\n> ") == 1
    assert settings.describe() in out


BAD_CHAT = {
    "steps over a block": (["-v", "--steps", "64"], "64 steps per block is more than the 32"),
    "budget not in blocks": (["-v", "--gen-length", "100"], "not a multiple of block_length 32"),
    "canvas over the context": (["--gen-length", "8192", "--block-length", "32"], "no room"),
    "boost without thinking": (["--think-end-boost", "100"], "works with variable_length only"),
}


@pytest.mark.parametrize("case", list(BAD_CHAT))
def test_the_chat_command_refuses_bad_settings_before_loading(case, local, opt_in, monkeypatch):
    from minillada.cli import chat

    monkeypatch.setenv("MINILLADA_WEIGHTS_DIR", str(local[0]))
    monkeypatch.setattr(chat, "_load", lambda *a: pytest.fail("loaded the weights"))
    flags, needle = BAD_CHAT[case]
    with pytest.raises(SystemExit) as err:
        chat.main(["--model", INSTRUCT, "--device", "cpu", *flags])
    assert needle in str(err.value) and "Nothing was loaded" in str(err.value)


def test_the_chat_command_refuses_a_base_model_and_a_boost_it_cannot_use(local, opt_in,
                                                                          monkeypatch):  # fmt: skip
    from minillada.cli import chat

    monkeypatch.setenv("MINILLADA_WEIGHTS_DIR", str(local[0]))
    monkeypatch.setattr(chat, "_load", lambda *a: pytest.fail("loaded the weights"))
    with pytest.raises(SystemExit, match="Base model"):
        chat.main(["--model", "iLLaDA-8B-Base", "-v"])
    with pytest.raises(SystemExit, match="does not: set think_end_boost to 0"):
        chat.main(["--model", "LLaDA-8B-Instruct", "-v", "--think-end-boost", "100"])


def test_check_only_on_a_rehearsal_needs_the_opt_in(local, monkeypatch, capsys):
    from minillada.cli.download_weights import main

    monkeypatch.setenv("MINILLADA_WEIGHTS_DIR", str(local[0]))
    monkeypatch.delenv(REHEARSAL_ENV, raising=False)
    assert main([INSTRUCT, "--check-only"]) == 1
    assert "published architecture" in capsys.readouterr().out
    monkeypatch.setenv(REHEARSAL_ENV, "1")
    assert main([INSTRUCT, "--check-only"]) == 0
    out = capsys.readouterr().out
    assert "NOTE         " in out and out.rstrip().endswith("ready        yes")


@pytest.mark.slow
def test_the_evaluate_command_runs_on_a_rehearsal(local, opt_in, monkeypatch, tmp_path,
                                                  gsm8k_test):  # fmt: skip
    from minillada.cli.evaluate import main

    monkeypatch.setenv("MINILLADA_WEIGHTS_DIR", str(local[0]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = main([INSTRUCT, "--task", "gsm8k", "--limit", "2", "--budget", "32",
                   "--dtype", "float32", "--out", str(tmp_path / "r.json")])  # fmt: skip
    assert result["model"] == INSTRUCT and result["n"] == 2 and result["world_size"] == 1


def test_no_shard_name_is_spelled_out_in_the_library_or_the_notebooks():
    pattern = re.compile(r"model-\d{5}-of-\d{5}")
    found = []
    for path in sorted((ROOT / "minillada").rglob("*.py")):
        found += [f"{path.name}: {m}" for m in pattern.findall(path.read_text())]
    for path in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        for k, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                code = "".join(cell["source"])
                found += [f"{path.name} cell {k}: {m}" for m in pattern.findall(code)]
    assert not found, f"shard names spelled out (read the index or call shard_name): {found}"


def test_the_rehearsal_writer_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match="No rehearsal for"):
        write_rehearsal("GPT-2", tmp_path)
    with pytest.raises(ValueError, match="layout="):
        write_rehearsal(INSTRUCT, tmp_path, layout="zip")
    folder = write_rehearsal(INSTRUCT, tmp_path)
    assert sorted(set(read_weight_map(folder).values())) == sorted(
        p.name for p in folder.glob("*.safetensors")
    )
