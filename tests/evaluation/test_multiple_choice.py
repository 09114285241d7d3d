"""Lesson 3: multiple choice by likelihood, lm-eval's way."""

import math

import pytest
import torch

from minillada.data.char import CharTokenizer
from minillada.evaluation.multiple_choice import (
    ar_scorer,
    choose,
    choose_text,
    confidence_scorer,
    encode_choices,
    mdm_scorer,
)
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig


def test_multiple_choice_raw_and_normalised_on_a_constructed_case(fixed_model):
    probs = torch.tensor([0.1, 0.6, 0.3, 1e-6])  # id 3 is the mask
    for scorer in (
        mdm_scorer(fixed_model(probs), mask_id=3, mc_num=16),
        ar_scorer(fixed_model(probs), 3),
        confidence_scorer(fixed_model(probs), mask_id=3),  # context-free: the exact sum too
    ):
        res = choose(scorer, [0, 2], [[2], [1, 1, 1], [0]])
        assert res.loglik == pytest.approx(
            [math.log(0.3), 3 * math.log(0.6), math.log(0.1)], abs=1e-4
        )
        assert res.raw_choice == 0  # the short option wins on the raw sum
        assert res.normalised_choice == 1  # per token, the likelier token wins


def test_multiple_choice_on_a_trained_lookup():
    """A tiny MDM that has memorised 'aa' -> 'c', 'bb' -> 'd' picks the right option, exactly."""
    model = TinyTransformer(
        TinyTransformerConfig(vocab_size=5, block_size=3, n_layer=1, n_head=2, n_embd=16),
        generator=torch.Generator().manual_seed(0),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    x = torch.tensor([[0, 0, 2], [1, 1, 3]])
    for _ in range(200):  # learn the answer at position 2 given the first two
        inp = x.clone()
        inp[:, 2] = 4
        loss = torch.nn.functional.cross_entropy(model(inp)[:, 2], x[:, 2])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    inp = x.clone()
    inp[:, 2] = 4
    learned = model(inp)[:, 2].softmax(-1).gather(1, x[:, 2:]).squeeze(1)
    assert (learned > 0.9).all(), learned  # the lookup is learned, so the choice is clear
    res = choose(mdm_scorer(model, 4), [0, 0], [[3], [2], [0]])
    assert res.raw_choice == 1 and res.stderr == [0.0, 0.0, 0.0]
    assert choose(mdm_scorer(model, 4), [1, 1], [[3], [2], [0]]).raw_choice == 0


def test_encode_choices_moves_trailing_spaces_like_lm_eval(fixed_model):
    tok = CharTokenizer.from_text("ab c")
    ctx, opts = encode_choices(tok.encode, "ab ", ["c", "a"])
    assert tok.decode(ctx) == "ab" and [tok.decode(o) for o in opts] == [" c", " a"]
    res = choose_text(
        ar_scorer(fixed_model(torch.full((5,), 0.2)), 4), tok.encode, "ab ", ["c", "cc"]
    )
    assert res.lengths == [2, 3]
