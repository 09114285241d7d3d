"""The results file: a header then one durable line per item, another run's file refused with the
keys that differ, a torn last line ignored by readers and cut off by the next writer, a merge
written atomically, and a snapshot fingerprint that follows the weights, not the folder."""

from __future__ import annotations

import json
import shutil

import pytest

from minillada.checkpoints.standins import write_standin
from minillada.evaluation.results_file import (
    ResultsFile,
    ResultsFileError,
    digest,
    rank_path,
    read_results,
    snapshot_fingerprint,
    write_results,
)

FINGERPRINT = {
    "model": {"name": "m", "dtype": "float32"},
    "settings": {"sampler": "exact", "threshold": None, "stop": ("a", "b")},
    "data": {"n": 4, "digest": "0123"},
}


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_new_file_is_a_header_then_one_line_per_item(tmp_path):
    path = tmp_path / "sub" / "r.jsonl"
    with ResultsFile.open(path, FINGERPRINT) as f:
        assert f.done == {}
        f.append(2, {"text": "two", "seconds": 0.5})
        f.append(0, {"text": "zero", "seconds": 0.25})
        with pytest.raises(ValueError, match="index 2 is already in"):
            f.append(2, {"text": "again"})
    lines = _lines(path)
    # JSON has no tuples: the header holds the fingerprint as it reads back
    assert lines[0] == {"fingerprint": json.loads(json.dumps(FINGERPRINT))}
    assert lines[1:] == [
        {"index": 2, "result": {"text": "two", "seconds": 0.5}},
        {"index": 0, "result": {"text": "zero", "seconds": 0.25}},
    ]
    fingerprint, pairs = read_results(path)
    assert fingerprint == lines[0]["fingerprint"]
    assert pairs == [(2, {"text": "two", "seconds": 0.5}), (0, {"text": "zero", "seconds": 0.25})]
    assert read_results(tmp_path / "absent.jsonl") == (None, [])


def test_reopening_with_the_same_fingerprint_continues_the_file(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsFile.open(path, FINGERPRINT) as f:
        f.append(1, {"x": 1})
    with ResultsFile.open(path, FINGERPRINT) as f:
        assert f.done == {1: {"x": 1}}  # what a restart skips
        f.append(3, {"x": 3})
    assert [i for i, _ in read_results(path)[1]] == [1, 3]
    assert sum(1 for line in _lines(path) if "fingerprint" in line) == 1  # one header


def test_another_runs_file_is_refused_naming_what_differs(tmp_path):
    path = tmp_path / "r.jsonl"
    ResultsFile.open(path, FINGERPRINT).close()
    other = json.loads(json.dumps(FINGERPRINT))
    other["settings"]["threshold"] = 0.9
    other["data"]["n"] = 5
    other["model"]["extra"] = "new"
    with pytest.raises(ResultsFileError) as err:
        ResultsFile.open(path, other)
    message = str(err.value)
    assert f"{path} holds the results of another run" in message
    assert "data.n (file: 4, this run: 5)" in message
    assert "settings.threshold (file: null, this run: 0.9)" in message
    assert 'model.extra (file: absent, this run: "new")' in message
    assert "model.name" not in message  # only the keys that differ
    assert "another --out" in message and "delete the file" in message
    assert len(_lines(path)) == 1  # the refused run wrote nothing


@pytest.mark.parametrize(
    "tail", [b'{"index": 3, "resu', b'{"index": 3, "result": {"x": 3}}', b"\0\0\0\n"]
)
def test_a_torn_last_line_is_ignored_then_cut_off(tmp_path, tail):
    """A kill mid-write leaves a line without its end or without its newline (or, after a crash,
    zeros): readers leave it out, the next writer cuts it off and its item is done again."""
    path = tmp_path / "r.jsonl"
    with ResultsFile.open(path, FINGERPRINT) as f:
        f.append(0, {"x": 0})
        f.append(1, {"x": 1})
    clean = path.read_bytes()
    path.write_bytes(clean + tail)
    assert read_results(path)[1] == [(0, {"x": 0}), (1, {"x": 1})]
    assert path.read_bytes() == clean + tail  # reading changes nothing
    with ResultsFile.open(path, FINGERPRINT) as f:
        assert sorted(f.done) == [0, 1]
        assert path.read_bytes() == clean  # cut off before anything is appended
        f.append(3, {"x": 3})
    assert [line.get("index") for line in _lines(path)] == [None, 0, 1, 3]


def test_a_torn_header_is_written_again(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"fingerprint": {"mod')
    assert read_results(path) == (None, [])
    with ResultsFile.open(path, FINGERPRINT) as f:
        f.append(0, {"x": 0})
    assert _lines(path)[0] == {"fingerprint": json.loads(json.dumps(FINGERPRINT))}


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"index": 0, "result": {}}\n', r"line 1: expected a header"),
        (b'{"fingerprint": {}}\nnot json\n{"index": 0, "result": {}}\n', r"line 2: expected an"),
        (b'{"fingerprint": {}}\n{"index": "0", "result": {}}\n', r"line 2: expected an item"),
    ],
)
def test_a_broken_line_that_is_not_a_kills_leftover_is_an_error(tmp_path, content, message):
    path = tmp_path / "r.jsonl"
    path.write_bytes(content)
    with pytest.raises(ResultsFileError, match=message):
        read_results(path)
    with pytest.raises(ResultsFileError, match="move it away"):
        ResultsFile.open(path, {})


def test_an_index_written_twice_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"fingerprint": {}}\n{"index": 0, "result": {}}\n{"index": 0, "result": {}}\n')
    with pytest.raises(ResultsFileError, match="holds index 0 twice"):
        ResultsFile.open(path, {})


def test_a_merge_is_written_whole_and_never_over_another_runs_file(tmp_path):
    path = tmp_path / "r.jsonl"
    write_results(path, FINGERPRINT, [(0, {"x": 0}), (1, {"x": 1})])
    assert read_results(path)[1] == [(0, {"x": 0}), (1, {"x": 1})]
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed
    write_results(path, FINGERPRINT, [(0, {"x": 0})])  # the same run may write it again
    assert len(_lines(path)) == 2
    with pytest.raises(ResultsFileError, match="data.n"):
        write_results(path, {**FINGERPRINT, "data": {"n": 9, "digest": "0123"}}, [])


def test_rank_files_sit_beside_the_requested_path(tmp_path):
    assert rank_path(tmp_path / "run.jsonl", 1, 4) == tmp_path / "run.rank1-of-4.jsonl"


def test_digest_ignores_key_order_and_sees_values():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2}) and len(digest({})) == 16


def test_the_snapshot_fingerprint_follows_the_files_not_the_folder(tmp_path, tiny_snapshot):
    here = snapshot_fingerprint(tiny_snapshot)
    copy = shutil.copytree(tiny_snapshot, tmp_path / "elsewhere")
    assert snapshot_fingerprint(copy) == here
    weights = sorted(copy.glob("*.safetensors"))[0]
    data = bytearray(weights.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + 5] ^= 1  # one bit of the first tensor's values
    weights.write_bytes(bytes(data))
    changed = snapshot_fingerprint(copy)
    assert changed["weights"] != here["weights"]
    assert (changed["config"], changed["tokenizer"]) == (here["config"], here["tokenizer"])
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("}", " }"))
    assert snapshot_fingerprint(copy)["config"] != here["config"]
    with pytest.raises(FileNotFoundError, match="Expected a snapshot folder"):
        snapshot_fingerprint(tmp_path / "absent")


@pytest.fixture(scope="module")
def tiny_snapshot(tmp_path_factory):
    """iLLaDA-8B-Instruct's stand-in: sharded safetensors, an index, a tokenizer."""
    return write_standin("iLLaDA-8B-Instruct", tmp_path_factory.mktemp("snapshot") / "s")
