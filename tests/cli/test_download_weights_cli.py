"""python -m minillada.cli.download_weights: --check-only reports on a folder (0 when it is ready,
1 when it is not), and without huggingface_hub the download says how to get it (2)."""

import importlib.util

import pytest

from minillada.checkpoints.standins import write_standin
from minillada.cli.download_weights import main

NAME = "iLLaDA-8B-Instruct"


def test_check_only_on_a_stand_in_prints_the_report(tmp_path, capsys):
    folder = write_standin(NAME, tmp_path / NAME)
    assert main([NAME, "--dir", str(folder), "--check-only"]) == 0
    out = capsys.readouterr().out
    assert f"snapshot     {folder}" in out and "STAND-IN     a random 2-layer model" in out
    assert "tokenizer    mask id 5, </think> ids [6], a chat template" in out
    assert out.rstrip().endswith("ready        yes")


def test_check_only_on_a_broken_folder_returns_1(tmp_path, capsys):
    folder = write_standin(NAME, tmp_path / NAME)
    (folder / "model-00001-of-00002.safetensors").unlink()
    assert main([NAME, "--dir", str(folder), "--check-only"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM      missing shard(s) model-00001-of-00002.safetensors" in out
    assert out.rstrip().endswith("ready        no")


def test_check_only_finds_the_folder_in_the_weights_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINILLADA_WEIGHTS_DIR", str(tmp_path))
    assert main(["LLaDA-8B-Base", "--check-only"]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'LLaDA-8B-Base'} does not exist" in out
    assert "python -m minillada.cli.download_weights LLaDA-8B-Base" in out


def test_without_huggingface_hub_the_download_says_what_to_install(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "huggingface_hub" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert main([NAME, "--dir", str(tmp_path / "target")]) == 2
    err = capsys.readouterr().err
    assert 'pip install -e ".[hub]"' in err
    assert "https://huggingface.co/GSAI-ML/iLLaDA-8B-Instruct" in err and "--check-only" in err
    assert not (tmp_path / "target").exists()  # nothing was downloaded or made


def test_an_unknown_model_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["iLLaDA-8B", "--check-only"])
    assert exit_info.value.code == 2 and "invalid choice: 'iLLaDA-8B'" in capsys.readouterr().err
