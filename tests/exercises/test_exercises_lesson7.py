"""Lesson 7's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import json
import os
import re

import pytest
import torch
import torch.nn.functional as F
from checker_cases import assert_fails, solution_and_stub_tests

from minillada.checkpoints.hf import load_hf_checkpoint
from minillada.checkpoints.shipped import SUBWORD_SHAKESPEARE, shipped_checkpoint
from minillada.data.subword import load_subword_corpus
from minillada.evaluation.multiple_choice import choose
from minillada.exercises import ExerciseFailed, lesson7

# --- the solutions, as in notebooks/solutions/07_released_weights.ipynb ---------------------------


def extract_answer(text):
    after = text.rsplit("</think>", 1)[-1]
    found = re.findall(r"#### *(-?[$0-9.,]*[0-9]+)", after)
    if not found:
        return None
    number = found[-1].replace(",", "").replace("$", "")
    number = number[:-1] if number.endswith(".") else number
    return re.sub(r"\.0+$", "", number)


def confidence_score(model, context_ids, answer_ids, mask_id, eos_id, pick_min=True,
                     dtype=torch.float64):  # fmt: skip
    P, L = len(context_ids), len(answer_ids)
    clean = torch.cat([context_ids, answer_ids])
    x = torch.cat([context_ids, torch.full((L,), mask_id)])[None]
    total = 0.0
    with torch.no_grad():
        for _ in range(L):
            inputs = x if eos_id is None else torch.cat([x, torch.tensor([[eos_id]])], dim=1)
            logits = model(inputs)[0, : P + L].to(dtype)
            masked = (x[0] == mask_id).nonzero().squeeze(1)
            ce = F.cross_entropy(logits[masked], clean[masked], reduction="none")
            best = int(ce.argmin()) if pick_min else 0  # the mistake: left to right
            total += float(ce[best])
            x[0, masked[best]] = clean[masked[best]]
    return -total


def evaluate_shard(score, items, rank, world, path, fingerprint, mistake=None):
    done = {}
    if os.path.exists(path):
        with open(path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")[:-1]  # a torn last line has no newline: left out
        if mistake == "drops_the_last_line":  # takes every last line for a torn one
            lines = data.splitlines()[:-1]
        if lines:
            if mistake != "trusts_any_file" and json.loads(lines[0])["fingerprint"] != fingerprint:
                raise ValueError(f"{path} holds the results of another run")
            for line in lines[1:]:
                record = json.loads(line)
                done[record["index"]] = record["result"]
        if mistake != "appends_after_a_torn_line" and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(sum(len(line) + 1 for line in lines))  # cut off the torn line
    if mistake == "blocks_not_strides":
        mine = list(range(rank * len(items) // world, (rank + 1) * len(items) // world))
    else:
        mine = list(range(rank, len(items), world))
    if mistake == "rescores_finished_items":
        done = {}
    at_the_end = []
    with open(path, "a") as f:
        if f.tell() == 0:
            f.write(json.dumps({"fingerprint": fingerprint}) + "\n")
        for i in mine:
            if i in done:
                continue
            done[i] = score(items[i])
            line = json.dumps({"index": i, "result": done[i]})
            if mistake == "writes_only_at_the_end":
                at_the_end.append(line)
                continue
            if mistake == "newline_before_each_line":
                f.write("\n" + line)
            else:
                f.write(line + "\n")
            if mistake != "never_flushes":
                f.flush()
        f.writelines(line + "\n" for line in at_the_end)
    return [(i, done[i]) for i in mine]


def stub(*args, **kwargs):
    raise NotImplementedError("Exercise 7.x")


EXERCISES = [
    ("7.1", lesson7.check_extract_answer, extract_answer, stub),
    ("7.2", lesson7.check_confidence_score, confidence_score, stub),
    ("7.4", lesson7.check_sharded_evaluation, evaluate_shard, stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- common mistakes ------------------------------------------------------------------------------


def test_the_first_number_instead_of_the_last_fails():
    def first(text):
        found = re.findall(r"#### *(-?[0-9.,]+)", text)
        return found[0].replace(",", "") if found else None

    assert_fails(lesson7.check_extract_answer, first, "7.1", r"case \d+/\d+ \(.*thinking")


def test_revealing_left_to_right_fails():
    def left_to_right(*args):
        return confidence_score(*args, pick_min=False)

    assert_fails(lesson7.check_confidence_score, left_to_right, "7.2", r"case 1/4 \(a 6-token")


def test_a_float32_solution_passes():
    """The lesson never asks for float64: the same loop in float32 is right, within float32's
    rounding."""
    def in_float32(*args):
        return confidence_score(*args, dtype=torch.float32)

    assert lesson7.check_confidence_score(in_float32)


def test_forgetting_padd_eos_fails():
    def no_eos(model, context_ids, answer_ids, mask_id, eos_id):
        return confidence_score(model, context_ids, answer_ids, mask_id, None)

    assert_fails(lesson7.check_confidence_score, no_eos, "7.2", r"case 2/4 \(.*padd_eos")


SHARD_MISTAKES = [
    ("blocks_not_strides", r"case 2/6 \(rank 1 of 3.*\n  expected the items \[1, 4, 7\]"),
    ("rescores_finished_items", r"case 3/6 \(.*killed.*\n  expected each .* items \[0, 2\]"),
    ("writes_only_at_the_end", r"case 1/6 .*\n  when item 1 was being scored, .* flush"),
    ("never_flushes", r"case 1/6 .*\n  when item 1 was being scored, .* flush"),
    ("newline_before_each_line", r"case 1/6 .*\n  expected every line to end with a newline"),
    ("drops_the_last_line", r"case 3/6 .*\n  expected each .*items \[2\] were scored again"),
    ("appends_after_a_torn_line", r"case 4/6 \(a kill mid-write.*\n  the library cannot read"),
    ("trusts_any_file", r"case 5/6 \(.*another fingerprint.*\n  expected an error"),
]


@pytest.mark.parametrize("mistake, match", SHARD_MISTAKES, ids=[m for m, _ in SHARD_MISTAKES])
def test_a_sharded_evaluation_mistake_fails(mistake, match):
    def attempt(*args):
        return evaluate_shard(*args, mistake=mistake)

    assert_fails(lesson7.check_sharded_evaluation, attempt, "7.4", match)


def test_a_run_that_catches_every_exception_is_still_killed():
    """The checker's kill is a BaseException, as a real interrupt: a loop that swallows
    ``Exception`` cannot hide it, and the restart must still score each item once."""

    def careful(score, *args):
        def guarded(item):
            try:
                return score(item)
            except Exception:  # the kill is no Exception: it goes through
                return {"answer": -1, "text": "failed"}

        return evaluate_shard(guarded, *args)

    assert lesson7.check_sharded_evaluation(careful)


# --- the experiment (7.3), on lesson 4's model ---------------------------------------------------


@pytest.fixture(scope="module")
def shakespeare():
    folder = shipped_checkpoint(SUBWORD_SHAKESPEARE)
    model = load_hf_checkpoint(folder, dtype=torch.float32).eval()
    corpus = load_subword_corpus(folder)
    return model, corpus.mask_id, lesson7.continuation_items(corpus.val_ids, 6)


def measure(model, mask_id, items):
    def picks(scorers):
        return {
            name: [
                choose(lesson7.scorer_for(name, model, mask_id), it.context, it.options).raw_choice
                for it in items
            ]
            for name in scorers
        }

    return picks


def test_the_experiment_passes_with_the_measurement_and_pairs_it(capsys, shakespeare):
    model, mask_id, items = shakespeare
    assert lesson7.check_scorer_experiment(measure(model, mask_id, items), model, mask_id, items)
    out = capsys.readouterr().out
    assert "Exercise 7.3 passed" in out and "McNemar exact p = " in out
    assert "better" not in out and "wins" not in out  # no verdict from the checker


def test_the_experiment_refuses_made_up_picks(shakespeare):
    model, mask_id, items = shakespeare
    truth = {name: [it.label for it in items] for name in lesson7.SCORERS}
    with pytest.raises(ExerciseFailed, match=r"^Exercise 7.3: confidence, item \d+: expected"):
        lesson7.check_scorer_experiment(lambda names: truth, model, mask_id, items)


def test_the_experiment_stub_is_not_attempted(capsys, shakespeare):
    model, mask_id, items = shakespeare
    assert not lesson7.check_scorer_experiment(stub, model, mask_id, items)
    assert "Exercise 7.3 not attempted yet" in capsys.readouterr().out
