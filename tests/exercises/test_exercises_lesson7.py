"""Lesson 7's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import re

import pytest
import torch
import torch.nn.functional as F
from checker_cases import assert_fails, solution_and_stub_tests

from minillada.checkpoints.released import load_released
from minillada.checkpoints.standins import write_standin
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


def merge_shards(per_rank, total):
    results = {}
    for pairs in per_rank:
        for index, result in pairs:
            if index in results or not 0 <= index < total:
                raise ValueError(f"index {index} twice or outside range({total})")
            results[index] = result
    if len(results) != total:
        raise ValueError(f"missing indices: {sorted(set(range(total)) - set(results))}")
    return [results[i] for i in range(total)]


def stub(*args, **kwargs):
    raise NotImplementedError("Exercise 7.x")


EXERCISES = [
    ("7.2", lesson7.check_extract_answer, extract_answer, stub),
    ("7.3", lesson7.check_confidence_score, confidence_score, stub),
    ("7.4", lesson7.check_merge_shards, merge_shards, stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- common mistakes ------------------------------------------------------------------------------


def test_the_first_number_instead_of_the_last_fails():
    def first(text):
        found = re.findall(r"#### *(-?[0-9.,]+)", text)
        return found[0].replace(",", "") if found else None

    assert_fails(lesson7.check_extract_answer, first, "7.2", r"case \d+/\d+ \(.*thinking")


def test_revealing_left_to_right_fails():
    def left_to_right(*args):
        return confidence_score(*args, pick_min=False)

    assert_fails(lesson7.check_confidence_score, left_to_right, "7.3", r"case 1/4 \(a 6-token")


def test_a_float32_solution_passes():
    """The lesson never asks for float64: the same loop in float32 is right, within float32's
    rounding."""
    def in_float32(*args):
        return confidence_score(*args, dtype=torch.float32)

    assert lesson7.check_confidence_score(in_float32)


def test_forgetting_padd_eos_fails():
    def no_eos(model, context_ids, answer_ids, mask_id, eos_id):
        return confidence_score(model, context_ids, answer_ids, mask_id, None)

    assert_fails(lesson7.check_confidence_score, no_eos, "7.3", r"case 2/4 \(.*padd_eos")


def test_a_merge_that_sorts_but_never_checks_fails():
    def trusting(per_rank, total):
        return [r for _, r in sorted(pair for pairs in per_rank for pair in pairs)]

    assert_fails(lesson7.check_merge_shards, trusting, "7.4", "a rank skipped item 3")


def test_a_merge_in_arrival_order_fails():
    def arrival(per_rank, total):
        return [r for pairs in per_rank for _, r in pairs]

    assert_fails(lesson7.check_merge_shards, arrival, "7.4", r"case 2/4 \(two ranks")


# --- the experiment (7.1), on the Instruct stand-in ---------------------------------------------


@pytest.fixture(scope="module")
def instruct_standin(tmp_path_factory):
    folder = write_standin("iLLaDA-8B-Instruct", tmp_path_factory.mktemp("s") / "i")
    loaded = load_released(folder, "iLLaDA-8B-Instruct", dtype=torch.float32)
    questions = ["What is 17 times 3?", "Name three colours.", "How far is the moon?"]
    return loaded, [loaded.chat_prompt([{"role": "user", "content": q}]) for q in questions]


def test_the_experiment_passes_with_the_measurement_and_judges_it(capsys, instruct_standin):
    loaded, prompts = instruct_standin

    def measure(powers):
        return {p: [lesson7.first_think_end(loaded, q, p) for q in prompts] for p in powers}

    assert lesson7.check_think_end_experiment(measure, loaded, prompts)
    out = capsys.readouterr().out
    assert "Exercise 7.1 passed" in out and "the later the boost wins" in out


def test_the_experiment_refuses_made_up_positions(instruct_standin):
    loaded, prompts = instruct_standin
    with pytest.raises(ExerciseFailed, match=r"^Exercise 7.1: power 1: expected </think>"):
        lesson7.check_think_end_experiment(lambda ps: {p: [7] * 3 for p in ps}, loaded, prompts)


def test_the_experiment_stub_is_not_attempted(capsys, instruct_standin):
    loaded, prompts = instruct_standin
    assert not lesson7.check_think_end_experiment(stub, loaded, prompts)
    assert "Exercise 7.1 not attempted yet" in capsys.readouterr().out
