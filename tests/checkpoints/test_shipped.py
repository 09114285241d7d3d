"""The shipped checkpoints load unchanged with the current library, and give the numbers
their records say."""

import math

import pytest
import torch

from minillada.checkpoints.folder import read_config
from minillada.checkpoints.shipped import (
    AR_SHAKESPEARE,
    CHAR_SHAKESPEARE,
    load_ar_shakespeare,
    load_char_shakespeare,
    load_subword_shakespeare,
    shipped_checkpoint,
)
from minillada.data.char import eval_windows, load_char_corpus
from minillada.diffusion.likelihood import estimate_nelbo
from minillada.evaluation.autoregressive import exact_nll


def test_every_shipped_model_loads_and_runs():
    char, tok = load_char_shakespeare()
    ar, ar_tok = load_ar_shakespeare()
    sub, sub_tok, record = load_subword_shakespeare()
    assert char.num_parameters() == 804_480 and not char.config.causal
    assert ar.config.causal and ar_tok.chars == tok.chars
    assert record["iter_num"] > 0 and sub_tok.mask_id < sub.config.vocab_size
    ids = torch.zeros(1, 8, dtype=torch.long)
    with torch.no_grad():
        assert char(ids).shape == (1, 8, tok.vocab_size)
        assert sub(ids).shape == (1, 8, sub.config.vocab_rows)


@pytest.mark.slow
def test_shipped_char_and_ar_models_match_their_records(tinyshakespeare):
    char, tok = load_char_shakespeare()
    ar, _ = load_ar_shakespeare()
    _, _, val_ids = load_char_corpus()
    windows = eval_windows(val_ids, 128, max_windows=40)
    bound = estimate_nelbo(char, windows, tok.mask_id, samples=4, seed=0)
    recorded = read_config(shipped_checkpoint(CHAR_SHAKESPEARE))["metrics"]
    # 40 of 871 windows: the record (all windows) must lie within 4 standard errors of this subset
    assert abs(bound.nats - recorded["val_nelbo_nats"]) < 4 * bound.stderr, (bound, recorded)
    nll = exact_nll(ar, windows, bos_id=tok.mask_id)
    ar_recorded = read_config(shipped_checkpoint(AR_SHAKESPEARE))["metrics"]
    assert abs(nll.nats - ar_recorded["val_nll_nats"]) < 4 * nll.stderr, (nll, ar_recorded)
    assert math.isfinite(nll.nats) and nll.nats < bound.nats  # the twin's exact NLL beats the bound


def test_shipped_instruct_model_follows_instructions(tinyshakespeare):
    """Lesson 6's instruct model: LLaDA's recipe, its record consistent with the held-out data, and
    on the two tasks that need no copying it answers most items right and always stops."""
    from minillada.checkpoints.shipped import load_instruct_shakespeare
    from minillada.data.instructions import make_instruction_data
    from minillada.evaluation.instructions import evaluate_instructions

    model, tok, record = load_instruct_shakespeare()
    data = make_instruction_data(tinyshakespeare.read_text())
    assert record["recipe"] == "llada"
    assert record["evaluation"]["variable"]["all"]["n"] == len(data.held_out)
    assert tok.mask_id == model.config.mask_token_id
    by_task = data.by_task()
    items = by_task["count"][:20] + by_task["number"][:20]
    scores = evaluate_instructions(model, tok, items, "variable", 32, 8, progress=False)
    # recorded on 100 items each: about 90%; 20 items leave room for other CPUs' rounding
    assert scores["count"].correct >= 14 and scores["number"].correct >= 14
    assert scores["all"].stop_rate == 1.0 and scores["all"].mean_forward_passes < 16


@pytest.mark.slow
def test_shipped_rl_model_gives_the_grades_its_record_holds(tinyshakespeare):
    """Lesson 9's model: its record holds the run's settings, curves and every held-out item's
    grade, and its weights give those grades back (every 20th item, fixed canvas)."""
    from minillada.checkpoints.shipped import load_rl_shakespeare
    from minillada.data.instructions import make_instruction_data
    from minillada.evaluation.instructions import evaluate_instructions

    model, tok, record = load_rl_shakespeare()
    data = make_instruction_data(tinyshakespeare.read_text())
    cfg = record["rl_config"]
    assert cfg["method"] in ("grpo", "wd1") and record["tasks"]
    assert len(record["history"]["reward"]) == cfg["max_iters"]
    assert {t for d in record["history"]["reward_by_task"] for t in d} <= set(record["tasks"])
    for sampler in ("fixed", "variable"):
        ev = record["evaluation"][sampler]["all"]
        assert len(ev["correct_items"]) == ev["n"] == len(data.held_out)
        assert sum(ev["correct_items"]) == ev["correct"]
    items = data.held_out[::20]
    scores = evaluate_instructions(model, tok, items, "fixed", 32, 8, progress=False, batch_size=32)
    recorded = record["evaluation"]["fixed"]["all"]["correct_items"][::20]
    agree = sum(a.correct == r for a, r in zip(scores["all"].answers, recorded, strict=True))
    assert agree >= len(items) - 2  # another CPU may round a near-tie the other way
