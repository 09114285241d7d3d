"""Lesson 8's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import math

import pytest
import torch
from checker_cases import assert_fails, solution_and_stub_tests

from minillada.checkpoints.shipped import load_instruct_shakespeare
from minillada.data.downloads import load_text
from minillada.data.instructions import make_instruction_data
from minillada.evaluation.instructions import evaluate_instructions
from minillada.exercises import ExerciseFailed, lesson8

# --- the solutions, as in notebooks/solutions/08_fast_sampling.ipynb ------------------------------


def window_attention(q, k_window, v_window, k_cache, v_cache, start, splice=True):
    W = q.shape[2]
    k, v = k_cache.clone(), v_cache.clone()
    if splice:
        k[:, :, start : start + W], v[:, :, start : start + W] = k_window, v_window
    weights = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)
    return weights @ v


def reveal_by_threshold(confidence, threshold, at_least_one=True):
    candidates = confidence > float("-inf")
    reveal = candidates & (confidence >= threshold)
    if at_least_one:
        best = confidence.argmax(dim=1)
        rows = candidates.any(dim=1)
        reveal[rows, best[rows]] = True
    return reveal


def stub(*args, **kwargs):
    raise NotImplementedError("Exercise 8.x")


EXERCISES = [
    ("8.1", lesson8.check_window_attention, window_attention, stub),
    ("8.2", lesson8.check_reveal_by_threshold, reveal_by_threshold, stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- common mistakes ------------------------------------------------------------------------------


def test_forgetting_to_splice_the_fresh_window_fails():
    def stale(*args):
        return window_attention(*args, splice=False)

    assert_fails(lesson8.check_window_attention, stale, "8.1", r"case 1/4 \(a window in the middle")


def test_a_threshold_without_the_fallback_fails():
    def stuck(confidence, threshold):
        return reveal_by_threshold(confidence, threshold, at_least_one=False)

    assert_fails(lesson8.check_reveal_by_threshold, stuck, "8.2", r"case 2/5 \(none above")


def test_a_strict_inequality_fails():
    def strict(confidence, threshold):
        return reveal_by_threshold(confidence, threshold + 1e-12)

    assert_fails(lesson8.check_reveal_by_threshold, strict, "8.2", r"case 3/5 \(exactly at")


# --- the experiment (8.3), on lesson 6's model --------------------------------------------------


@pytest.fixture(scope="module")
def instruct(tinyshakespeare):
    model, tokenizer, _ = load_instruct_shakespeare()
    items = make_instruction_data(load_text(), 10_000, 100, seed=0).held_out[::70]
    return model, tokenizer, items


def test_the_experiment_passes_with_the_measurement_and_pairs_it(capsys, instruct):
    model, tokenizer, items = instruct

    def sweep(thresholds):
        out = {}
        for t in thresholds:
            s = evaluate_instructions(model, tokenizer, items, "fixed", 32, 8, False, t, "dual")
            out[t] = (s["all"].accuracy, s["all"].mean_forward_passes)
        return out

    assert lesson8.check_threshold_experiment(sweep, model, tokenizer, items)
    out = capsys.readouterr().out
    assert "Exercise 8.3 passed: 5 thresholds measured on" in out
    assert out.count("McNemar p = ") == 5  # a paired test per threshold, against the exact sampler
    assert "lowest threshold" not in out and "interval" not in out  # no verdict from the checker


def test_the_experiment_refuses_made_up_numbers(instruct):
    model, tokenizer, items = instruct
    with pytest.raises(ExerciseFailed, match=r"^Exercise 8.3: threshold 0.1: expected accuracy"):
        lesson8.check_threshold_experiment(
            lambda ts: dict.fromkeys(ts, (1.0, 1.0)), model, tokenizer, items
        )


def test_the_experiment_stub_is_not_attempted(capsys, instruct):
    model, tokenizer, items = instruct
    assert not lesson8.check_threshold_experiment(stub, model, tokenizer, items)
    assert "Exercise 8.3 not attempted yet" in capsys.readouterr().out


def test_the_window_cases_cover_a_refresh(capsys):
    # the last case recomputes everything: the attention of q over the window alone
    q, kw, vw, kc, vc, start = lesson8._window_cases()[-1].args
    full = torch.softmax(q @ kw.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ vw
    torch.testing.assert_close(window_attention(q, kw, vw, kc, vc, start), full)
