"""HellaSwag: lines in the file's exact format, lm-eval's preparation, and the git-blob pin."""

import hashlib
import json
import subprocess

import pytest

from minillada.data import downloads
from minillada.data.downloads import DatasetError, DatasetFile, git_blob_of, verify
from minillada.evaluation.hellaswag import (
    FORMAT_EXAMPLES,
    load_hellaswag,
    preprocess,
    write_format_examples,
)

LINES = [  # the field layout of rowanz/hellaswag data/hellaswag_val.jsonl
    {"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.",
     "ctx_b": "he", "ctx": "A man is sitting on a roof. he", "split": "val",
     "split_type": "indomain", "label": 3,
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
     "source_id": "activitynet~v_-JhWjGDPHMY"},
    {"ind": 92, "activity_label": "Home and Garden", "ctx_a": "[header] How to paint a fence",
     "ctx_b": "[title] choose a dry day.", "ctx": "", "split": "val", "split_type": "zeroshot",
     "label": 0, "endings": ["[step] Rain ruins  wet paint.", "a", "b", "c"],
     "source_id": "wikihow~1"},
]  # fmt: skip


def test_items_are_prepared_as_lm_eval_prepares_them(tmp_path):
    path = tmp_path / "hellaswag_val.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    first, second = load_hellaswag(path)
    assert first.context == "Roof shingle removal: A man is sitting on a roof. He"
    assert first.options[3] == "starts pulling up roofing on a roof." and first.label == 3
    assert second.context == "Home and Garden: How to paint a fence. choose a dry day."
    assert second.options[0] == " Rain ruins wet paint."  # lm-eval strips before removing "[step]"
    assert preprocess(" a [title]b  c ") == "a. b c"
    assert len(load_hellaswag(path, n=1)) == 1


def test_the_file_is_pinned_by_its_git_blob_id(tmp_path, monkeypatch):
    path = tmp_path / "hellaswag_val.jsonl"
    path.write_bytes(b'{"x": 1}\n')
    expected = hashlib.sha1(b"blob 9\0" + b'{"x": 1}\n').hexdigest()
    assert git_blob_of(path) == expected
    try:  # git itself agrees, where it is installed
        out = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True)
        if out.returncode == 0:
            assert out.stdout.strip() == expected
    except FileNotFoundError:
        pass
    spec = DatasetFile("hellaswag_val", "https://example.invalid/h.jsonl", None, None,
                       "hellaswag/hellaswag_val.jsonl", ("hellaswag_val.jsonl",), "MIT",
                       git_blob=expected)  # fmt: skip
    assert verify(path, spec) == path
    with pytest.raises(DatasetError, match="expected git blob id 0f5ee25d"):
        verify(path, downloads.DATASETS["hellaswag_val"])
    monkeypatch.setenv(downloads.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(DatasetError, match="does not match the expected hellaswag_val"):
        load_hellaswag()  # a local copy with other bytes is refused, never silently used


def test_the_format_examples_are_read_back_as_written(tmp_path):
    items = load_hellaswag(write_format_examples(tmp_path / "own.jsonl"))
    assert len(items) == len(FORMAT_EXAMPLES) == 4
    for item, (activity, ctx_a, ctx_b, endings, label) in zip(items, FORMAT_EXAMPLES, strict=True):
        assert item.context == f"{activity}: {ctx_a} {ctx_b}" and item.options == endings
        assert item.label == label
    assert [i.label for i in items] == [0, 1, 2, 3]  # every position of the right ending once
