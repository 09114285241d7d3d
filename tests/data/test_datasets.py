import hashlib
import json
from pathlib import Path

import pytest

from minillada.data import downloads as datasets
from minillada.data.downloads import (
    DATASETS,
    LLADA_REFERENCE_FILES,
    DatasetError,
    dataset_path,
    load_text,
)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """An empty data/ cache and no MINILLADA_DATA_DIR."""
    monkeypatch.setattr(datasets, "cache_dir", lambda: tmp_path / "data")
    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    return tmp_path / "data"


def test_tiny_shakespeare_from_data_dir(tinyshakespeare):
    text = load_text("tinyshakespeare")
    assert len(text) == 1_115_394
    assert text.startswith("First Citizen:")


def test_download_path_verifies_and_caches(tinyshakespeare, isolated_cache, monkeypatch):
    # The real download code, pointed at a file:// URL instead of the network.
    spec = DATASETS["tinyshakespeare"]
    monkeypatch.setitem(DATASETS, "tinyshakespeare", _with_url(spec, tinyshakespeare.as_uri()))
    path = dataset_path("tinyshakespeare")
    assert path == isolated_cache / "tinyshakespeare" / "input.txt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256
    assert dataset_path("tinyshakespeare") == path  # second call: served from the cache


def test_wrong_checksum_is_refused_and_not_cached(isolated_cache, monkeypatch, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("not shakespeare")
    spec = DATASETS["tinyshakespeare"]
    monkeypatch.setitem(DATASETS, "tinyshakespeare", _with_url(spec, bad.as_uri()))
    with pytest.raises(DatasetError, match="expected sha256 86c4e6aa"):
        dataset_path("tinyshakespeare")
    assert not (isolated_cache / "tinyshakespeare" / "input.txt").exists()


def test_wrong_checksum_in_data_dir(tmp_path, monkeypatch):
    (tmp_path / "tinyshakespeare.txt").write_text("First Citizen: edited")
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(DatasetError, match="does not match the expected tinyshakespeare"):
        dataset_path("tinyshakespeare")


def test_no_copy_and_no_network_names_url_and_variable(isolated_cache, monkeypatch):
    spec = DATASETS["tinyshakespeare"]
    # An unroutable URL stands in for "no network": the error must say what to do.
    monkeypatch.setitem(
        DATASETS, "tinyshakespeare", _with_url(spec, "http://127.0.0.1:9/input.txt")
    )
    with pytest.raises(DatasetError) as err:
        dataset_path("tinyshakespeare", timeout=2)
    message = str(err.value)
    assert "http://127.0.0.1:9/input.txt" in message
    assert "MINILLADA_DATA_DIR" in message
    assert "tinyshakespeare.txt" in message


def test_gsm8k_available(gsm8k_test):
    lines = Path(dataset_path("gsm8k_test")).read_text().splitlines()
    assert len(lines) == 1319


def _with_url(spec, url):
    from dataclasses import replace

    return replace(spec, url=url)


def test_the_released_llada_metadata_comes_through_the_download_path(llada_reference):
    names = sorted(p.name for p in llada_reference.iterdir() if p.suffix == ".json")
    assert names == sorted(LLADA_REFERENCE_FILES)
    config = json.loads((llada_reference / "config.json").read_text())
    assert config["model_type"] == "llada" and config["n_layers"] == 32


def test_several_data_folders_and_a_tampered_reference(llada_reference, tmp_path, monkeypatch):
    copy = tmp_path / "second" / "llada-8b"
    copy.mkdir(parents=True)
    for p in llada_reference.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    monkeypatch.setattr(datasets, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setenv(datasets.DATA_DIR_ENV, f"{tmp_path / 'empty'}:{tmp_path / 'second'}")
    assert datasets.llada_reference(download=False) == copy  # found in the second folder
    (copy / "config.json").write_text("{}")
    with pytest.raises(DatasetError, match=r"config.json does not match the expected"):
        datasets.llada_reference(download=False)

