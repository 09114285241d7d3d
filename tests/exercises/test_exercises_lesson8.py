"""Lesson 8's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import pytest
import torch
from checker_cases import assert_fails, solution_and_stub_tests

from minillada.checkpoints.shipped import load_instruct_shakespeare
from minillada.data.downloads import load_text
from minillada.data.instructions import make_instruction_data
from minillada.evaluation.instructions import evaluate_instructions
from minillada.exercises import ExerciseFailed, lesson8
from minillada.models.kv_cache import KVCache
from minillada.sampling.primitives import num_transfer_tokens

# --- the solutions, as in notebooks/solutions/08_fast_sampling.ipynb ------------------------------


def cached_generate(model, prompt, gen_length, block_length, steps, mask_id, cache, refresh,
                    mistake=None):  # fmt: skip
    P = prompt.shape[1]
    x = torch.cat([prompt, torch.full((1, gen_length), mask_id)], dim=1)
    per_block = steps // (gen_length // block_length)
    kv = KVCache()
    for start in range(P, P + gen_length, block_length):
        end = start + block_length
        schedule = num_transfer_tokens((x[:, start:end] == mask_id).sum(1), per_block)[0]
        for step in range(per_block):
            if mistake == "never_refresh":  # records once, before the first block
                full = start == P and step == 0
            elif mistake == "refresh_one_step_late":
                full = step == 0 or (refresh and (step + 1) % refresh == 0)
            else:
                full = step == 0 or (refresh is not None and step % refresh == 0)
            if full:
                logits = model(x, cache=kv.record())[:, start:end]
                first = logits
            elif mistake == "block_logits_cached":  # the block's first logits, reused
                logits = first
            else:
                a = start + 1 if mistake == "window_off_by_one" else start
                stop = x.shape[1] if cache == "prefix" else end
                logits = model(x[:, a:stop], cache=kv, start=a)[:, : end - a]
                if mistake == "window_off_by_one":
                    logits = torch.cat([logits[:, :1], logits], 1)
            logits = logits.double()
            x0 = logits.argmax(-1)
            scores = logits if mistake == "logit_as_confidence" else logits.softmax(-1)
            confidence = scores.gather(-1, x0[..., None])[..., 0]
            confidence = torch.where(x[:, start:end] == mask_id, confidence, float("-inf"))
            reveal = confidence[0].topk(int(schedule[step])).indices
            x[0, start + reveal] = x0[0, reveal]
    return x


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
    ("8.1", lesson8.check_cached_sampler, cached_generate, stub),
    ("8.2", lesson8.check_reveal_by_threshold, reveal_by_threshold, stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- common mistakes ------------------------------------------------------------------------------


CACHE_MISTAKES = [
    ("never_refresh", r"case 1/6 \(a dual cache.*\n  pass 5 \(block 2, step 1 of 4\): expected a"),
    ("refresh_one_step_late", r"case 4/6 \(.*refreshed every 2.*\n  pass 2 \(block 1, step 2"),
    ("block_logits_cached", r"case 1/6 .*\n  pass 2 \(block 1, step 2 of 4\): expected a window"),
    ("window_off_by_one", r"case 1/6 .*\n  pass 2 .*you.* ran a window forward over positions 6"),
    ("logit_as_confidence", r"case \d/6 .*\n  the forward passes are right but the tokens differ"),
]


@pytest.mark.parametrize("mistake, match", CACHE_MISTAKES, ids=[m for m, _ in CACHE_MISTAKES])
def test_a_cached_sampler_mistake_fails(mistake, match):
    def attempt(*args):
        return cached_generate(*args, mistake=mistake)

    assert_fails(lesson8.check_cached_sampler, attempt, "8.1", match)


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
