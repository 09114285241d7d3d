"""Reproduction fingerprints: a record agrees with itself and with a change far below the
tolerance, disagrees after a layer is rescaled, cannot be compared across probes, and
check_reproduction writes the reference once, then passes, then fails."""

import json

import pytest
import torch

from minillada.checkpoints.released import load_released
from minillada.checkpoints.standins import write_standin
from minillada.evaluation.reproduction import (
    PROBE_MASKS,
    TopK,
    check_reproduction,
    compare_top_k,
    default_tolerance,
    probe,
    record_top_k,
)

NAME = "iLLaDA-8B-Instruct"


@pytest.fixture
def loaded(tmp_path):
    folder = write_standin(NAME, tmp_path / "standin")
    return load_released(folder, NAME, dtype=torch.float32)


def _record(loaded, **probe_kwargs):
    ids, positions = probe(loaded.tokenizer, **probe_kwargs)
    return record_top_k(loaded.model, loaded.name, ids, positions)


def _scale(loaded, parameter: str, factor: float):
    with torch.no_grad():
        dict(loaded.model.named_parameters())[parameter].mul_(factor)


def test_the_probe_and_the_record(loaded):
    tok = loaded.tokenizer
    ids, positions = probe(tok)
    assert ids[0] == tok.bos_id and ids[-PROBE_MASKS:] == [tok.mask_id] * PROBE_MASKS
    assert positions == list(range(len(ids) - PROBE_MASKS - 1, len(ids)))
    record = record_top_k(loaded.model, loaded.name, ids, positions, k=3)
    assert record.dtype == "float32" and record.device == "cpu"
    assert len(record.ids) == len(positions) and all(len(row) == 3 for row in record.ids)
    assert all(row == sorted(row, reverse=True) for row in record.logits)
    assert TopK(**json.loads(record.to_json())) == record


def test_a_record_agrees_with_itself_and_not_with_a_rescaled_layer(loaded):
    reference = _record(loaded)
    assert compare_top_k(reference, reference) == []
    assert compare_top_k(_record(loaded), reference) == []  # the same ops again, bit for bit
    _scale(loaded, "model.transformer.blocks.1.ff_out.weight", 1.5)
    problems = compare_top_k(_record(loaded), reference)
    assert problems and all(p.startswith("position ") for p in problems)
    assert any("recorded" in p and "allowed ±" in p for p in problems)


def test_a_change_far_below_the_tolerance_is_no_problem(loaded):
    reference = _record(loaded)
    _scale(loaded, "model.transformer.blocks.0.ff_out.weight", 1 + 1e-6)
    run = _record(loaded)
    drift = max(
        abs(a - b)
        for row, ref in zip(run.logits, reference.logits, strict=True)
        for a, b in zip(row, ref, strict=True)
    )
    tolerance = default_tolerance("float32")
    assert run.ids == reference.ids and 0 < drift < tolerance / 10  # moved, but far too little
    assert compare_top_k(run, reference) == []
    # it is the tolerance that lets the drift pass
    assert compare_top_k(run, reference, tolerance=drift / 100) != []


def test_records_of_different_probes_cannot_be_compared(loaded):
    one, other = _record(loaded), _record(loaded, masks=PROBE_MASKS + 1)
    message = ["the probe differs (another tokenizer?): the records cannot be compared"]
    assert compare_top_k(one, other) == message
    assert compare_top_k(_record(loaded, text="Another text."), one) == message


def test_check_reproduction_writes_then_passes_then_fails(loaded, tmp_path):
    path = tmp_path / "reference" / f"{NAME}.json"
    first = check_reproduction(_record(loaded), path)
    assert first.startswith(f"recorded the reference {path}") and path.is_file()
    assert TopK.from_file(path) == _record(loaded)
    second = check_reproduction(_record(loaded), path)
    n = (PROBE_MASKS + 1) * 5
    assert second == f"reproduces {path}: {n} top-k logits agree (recorded on cpu)"
    _scale(loaded, "model.transformer.blocks.1.ff_out.weight", 1.5)
    with pytest.raises(AssertionError, match=rf"does not reproduce .*{NAME}\.json.*float32"):
        check_reproduction(_record(loaded), path)


def test_without_write_no_file_is_made(loaded, tmp_path):
    path = tmp_path / "nothing" / "ref.json"
    assert check_reproduction(_record(loaded), path, write=False) == f"no reference at {path} yet"
    assert not path.exists() and not path.parent.exists()
