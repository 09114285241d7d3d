"""The released models' snapshots: every problem inspect_snapshot finds says what is wrong and
what to do, load_released refuses such a folder before it reads a weight, the memory estimate is
lesson 5's count, and the folders are found where the download puts them."""

import json
import shutil

import pytest
import torch

import minillada.checkpoints.released as released_module
from minillada.checkpoints.released import (
    RELEASED,
    WEIGHTS_ENV,
    DeviceReport,
    SnapshotError,
    check_device,
    inspect_snapshot,
    load_released,
    memory_needed,
    released_folder,
    weights_dir,
)
from minillada.checkpoints.standins import (
    ILLADA_STANDIN_SPECIALS,
    ILLADA_STANDIN_TEMPLATE,
    STAND_IN_FIELD,
    TOKENIZER_TEXT,
    write_standin,
)
from minillada.data import bpe
from minillada.data.tokenizer import TokenizerFilesError
from minillada.models.llada import preset
from minillada.models.sizing import activation_memory, count_parameters, weight_memory
from minillada.runtime import repo_path

INSTRUCT = "iLLaDA-8B-Instruct"
DOWNLOAD = "python -m minillada.cli.download_weights iLLaDA-8B-Instruct"
SHARD_2 = "model-00002-of-00002.safetensors"


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    names = ("iLLaDA-8B-Instruct", "iLLaDA-8B-Base", "LLaDA-8B-Instruct")
    return {name: write_standin(name, root / name) for name in names}


def _copy(standins, name, tmp_path):
    return shutil.copytree(standins[name], tmp_path / name)


# Each builder breaks a copy of a stand-in and returns (folder, expected model, patterns that the
# problem's message must contain: what is wrong, and what to do).


def _absent(standins, tmp_path):
    return tmp_path / "nowhere", INSTRUCT, ["does not exist", DOWNLOAD, WEIGHTS_ENV]


def _missing_shard(standins, tmp_path):
    folder = _copy(standins, INSTRUCT, tmp_path)
    (folder / SHARD_2).unlink()
    return folder, INSTRUCT, [f"missing shard(s) {SHARD_2}", "incomplete", DOWNLOAD, "resumes"]


def _truncated_shard(standins, tmp_path):
    folder = _copy(standins, INSTRUCT, tmp_path)
    data = (folder / SHARD_2).read_bytes()
    (folder / SHARD_2).write_bytes(data[: len(data) // 2])
    total = json.loads((folder / "model.safetensors.index.json").read_text())["metadata"]
    on_disk = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    assert on_disk < total["total_size"]  # the case under test
    needles = [f"hold {on_disk:,} bytes", f"{total['total_size']:,}", "truncated", DOWNLOAD]
    return folder, INSTRUCT, needles


def _other_dialect(standins, tmp_path):
    folder = _copy(standins, "LLaDA-8B-Instruct", tmp_path)
    needles = ["in the llada layout", "published in the illada layout", "holds another model"]
    return folder, INSTRUCT, needles


def _base_tokenizer(standins, tmp_path):
    folder = _copy(standins, INSTRUCT, tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(standins["iLLaDA-8B-Base"] / name, folder / name)
    needles = [
        "needs a chat template",
        "tokenizer_config.json has none",
        "Base model's tokenizer files",
    ]
    return folder, INSTRUCT, needles


def _no_think_end(standins, tmp_path):
    folder = _copy(standins, INSTRUCT, tmp_path)
    # neither a <think> nor a </think> token, and a template that never mentions thinking
    specials = [
        "<reserved>" if s == "<think>" else s for s in ILLADA_STANDIN_SPECIALS if s != "</think>"
    ]
    assert specials.index("<[MASK]>") == 5  # the mask keeps iLLaDA's id
    tokenizer = bpe.train_bpe_fast(TOKENIZER_TEXT, 512, specials, True)
    template = ILLADA_STANDIN_TEMPLATE.replace("<think>\n", "")
    assert "think" not in template
    bpe.save_tokenizer(tokenizer, folder, "<s>", "</s>", chat_template=template)
    needles = [
        "neither this tokenizer nor its chat template knows '</think>'",
        "end-of-thinking boost",
        "not iLLaDA-8B-Instruct's tokenizer files",
    ]
    return folder, INSTRUCT, needles


def _not_the_published_architecture(standins, tmp_path):
    folder = _copy(standins, INSTRUCT, tmp_path)
    hf = json.loads((folder / "config.json").read_text())
    del hf[STAND_IN_FIELD]  # now it claims to be the real model
    (folder / "config.json").write_text(json.dumps(hf))
    needles = [
        "does not describe iLLaDA-8B-Instruct's published architecture",
        "d_model: 64 vs 4096",
        "n_layers: 2 vs 32",
        "(file vs published)",
    ]
    return folder, INSTRUCT, needles


BROKEN = {
    "absent": _absent,
    "missing shard": _missing_shard,
    "truncated shard": _truncated_shard,
    "other dialect": _other_dialect,
    "base tokenizer": _base_tokenizer,
    "no </think>": _no_think_end,
    "architecture": _not_the_published_architecture,
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_problem_is_named_with_what_to_do(standins, tmp_path, case):
    folder, expected, needles = BROKEN[case](standins, tmp_path)
    report = inspect_snapshot(folder, expected)
    assert not report.ok and len(report.problems) == 1, report.problems
    (problem,) = report.problems
    for needle in needles:
        assert needle in problem, (needle, problem)
    assert f"PROBLEM      {problem}" in str(report) and str(report).endswith("ready        no")


@pytest.mark.parametrize("case", list(BROKEN))
def test_load_released_refuses_before_reading_a_weight(standins, tmp_path, monkeypatch, case):
    folder, expected, _ = BROKEN[case](standins, tmp_path)

    def no_weights(*args, **kwargs):
        raise AssertionError("load_released read the weights of a broken snapshot")

    monkeypatch.setattr(released_module, "load_hf_checkpoint", no_weights)
    with pytest.raises(SnapshotError) as err:
        load_released(folder, expected)
    assert str(err.value).startswith(f"The snapshot {folder} cannot be used:")
    assert inspect_snapshot(folder, expected).problems[0] in str(err.value)


def test_the_pristine_stand_ins_have_no_problem(standins):
    for name, folder in standins.items():
        report = inspect_snapshot(folder, name)
        assert report.ok and str(report).endswith("ready        yes"), report.problems
        assert report.weight_bytes == sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def test_without_an_expected_model_the_absent_folder_says_download_it_again(tmp_path):
    report = inspect_snapshot(tmp_path / "nowhere")
    assert report.problems == [
        f"{tmp_path / 'nowhere'} does not exist: download it again, or point "
        f"${WEIGHTS_ENV} (or the folder argument) at the folder that holds it."
    ]
    assert report.name == "nowhere" and report.stand_in is None


@pytest.mark.parametrize(
    "written, expected", [("iLLaDA-8B-Base", INSTRUCT), ("LLaDA-8B-Instruct", "LLaDA-8B-Base")]
)
def test_a_stand_in_of_the_other_variant_is_reported(standins, written, expected):
    report = inspect_snapshot(standins[written], expected)
    assert not report.ok, (report.name, report.instruct)
    assert any("use the folder of the other variant" in p for p in report.problems)


def test_chat_prompt_and_think_end_ids_are_refused_where_they_make_no_sense(standins):
    base = load_released(standins["iLLaDA-8B-Base"], "iLLaDA-8B-Base")
    chat = [{"role": "user", "content": "Hi"}]
    with pytest.raises(SnapshotError, match=r"stand-in for iLLaDA-8B-Base is a Base model"):
        base.chat_prompt(chat)
    assert base.think_end_ids == [6]  # the Base tokenizer has the token, it just does not chat
    instruct = load_released(standins[INSTRUCT], INSTRUCT)
    assert instruct.chat_prompt(chat) == instruct.tokenizer.apply_chat_template(chat, tokenize=True)
    llada = load_released(standins["LLaDA-8B-Instruct"], "LLaDA-8B-Instruct")
    assert llada.chat_prompt(chat) == llada.tokenizer.apply_chat_template(chat, tokenize=True)
    with pytest.raises(TokenizerFilesError, match=r"no '</think>' token.*think_end_boost=0"):
        _ = llada.think_end_ids


def test_memory_needed_is_lesson_5s_count():
    config = preset("illada_8b", rope_theta=500_000.0, rms_norm_eps=1e-5)
    n = count_parameters(config).total
    assert n * 2 == 15_230_050_304 == weight_memory(config)["bf16"]
    peak = activation_memory(config, 1, 8192, bytes_per_value=2)["peak"]
    assert peak > 0 and memory_needed(config) == n * 2 + peak
    peak_fp32 = activation_memory(config, 1, 1000, bytes_per_value=4)["peak"]
    assert memory_needed(config, torch.float32, seq_len=1000) == n * 4 + peak_fp32


def test_check_device_on_the_cpu_reports_and_never_raises():
    config = preset("illada_8b", rope_theta=500_000.0, rms_norm_eps=1e-5)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        report = check_device(config, "cpu", dtype)
        assert isinstance(report, DeviceReport)
        assert report.total_bytes is None and report.free_bytes is None
        assert report.needed_bytes == memory_needed(config, dtype)
    assert str(check_device(config, torch.device("cpu"))) == (
        f"device       CPU: no GPU; the model needs {memory_needed(config) / 2**30:.1f} GiB of "
        "host memory"
    )


def test_released_folder_follows_the_environment_and_the_argument(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert weights_dir() == repo_path("data", "weights")
    assert released_folder(INSTRUCT) == repo_path("data", "weights", INSTRUCT)
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "big"))
    assert released_folder("LLaDA-8B-Base") == tmp_path / "big" / "LLaDA-8B-Base"
    assert released_folder(INSTRUCT, tmp_path / "mine") == tmp_path / "mine"
    assert released_folder(INSTRUCT, str(tmp_path)) == tmp_path
    monkeypatch.setenv("HOME", str(tmp_path))
    assert released_folder(INSTRUCT, "~/w") == tmp_path / "w"


def test_unknown_model_names_raise_key_error(tmp_path):
    for call in (
        lambda: released_folder("iLLaDA-8B"),
        lambda: released_folder("LLaDA-7B-Base", tmp_path),
        lambda: inspect_snapshot(tmp_path, "iLLaDA-8B"),
    ):
        with pytest.raises(KeyError, match=r"Unknown released model.*choose one of"):
            call()


def test_the_four_released_models():
    assert sorted(RELEASED) == [
        "LLaDA-8B-Base",
        "LLaDA-8B-Instruct",
        "iLLaDA-8B-Base",
        "iLLaDA-8B-Instruct",
    ]
    for name, model in RELEASED.items():
        assert model.repo_id == f"GSAI-ML/{name}"
        assert model.instruct == name.endswith("Instruct")
        assert model.dialect == ("illada" if name.startswith("iLLaDA") else "llada")
        assert model.preset == f"{model.dialect}_8b"
        assert model.download_command == f"python -m minillada.cli.download_weights {name}"
