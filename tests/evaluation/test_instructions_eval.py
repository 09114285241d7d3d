"""Lesson 6's evaluation: answers cut at the first stop id, exact match, stops and forward passes
counted, on an oracle model whose every prediction is known."""

from types import SimpleNamespace

import pytest
import torch

from minillada.data import bpe
from minillada.data.instructions import Example, encode_example
from minillada.data.tokenizer import LLaDATokenizer
from minillada.evaluation.instructions import (
    answer_instruction,
    evaluate_instructions,
    sampled_grades,
)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    text = "How many words? one two three four five. Repeat after me: to be or not to be. " * 20
    folder = bpe.save_tokenizer(bpe.train_bpe_fast(text, 320), tmp_path_factory.mktemp("tok"))
    return LLaDATokenizer.from_folder(folder)


class Oracle(torch.nn.Module):
    """Predicts ``target[i]`` at position i of the canvas (the prompt's own tokens before it), with
    confidence falling left to right, so every sampler reveals it left to right."""

    def __init__(self, target: list[int], vocab: int, context: int = 128):
        super().__init__()
        self.target = torch.tensor(target)
        self.vocab = vocab
        self.config = SimpleNamespace(context_length=context, mask_token_id=None)

    def forward(self, x, attention_mask=None):
        B, L = x.shape
        logits = torch.zeros(B, L, self.vocab, dtype=torch.float64)
        want = (
            self.target[:L]
            if L <= len(self.target)
            else torch.cat(
                [self.target, self.target.new_full((L - len(self.target),), self.target[-1])]
            )
        )
        logits[:, torch.arange(L), want] = 10.0 - torch.arange(L, dtype=torch.float64) / L
        return logits


def oracle_for(tok, example, reply_ids):
    prompt, _ = encode_example(tok, example)
    return Oracle(prompt + reply_ids, tok.vocab_size), len(prompt)


def test_a_right_answer_stops_and_is_cut_at_the_first_stop_id(tok):
    e = Example("count", "How many words? to be or not", "four")
    reply = tok.encode("four") + [tok.eot_id, tok.eos_id] + tok.encode(" junk after the end")
    model, _ = oracle_for(tok, e, reply)
    for sampler, passes in (("fixed", 32), ("variable", 8)):
        a = answer_instruction(model, tok, e, sampler, gen_length=32, block_length=8)
        assert a.correct and a.text == "four" and a.stopped
        assert a.tokens == len(tok.encode("four")) and a.reference_tokens == a.tokens
        assert a.forward_passes == passes


def test_an_answer_that_never_stops(tok):
    e = Example("repeat", "Repeat after me: to be", "to be")
    model, _ = oracle_for(tok, e, tok.encode(" to be or not to be") * 10)
    a = answer_instruction(model, tok, e, "variable", gen_length=16, block_length=8)
    assert not a.stopped and not a.correct and a.forward_passes == 16 and a.tokens == 16
    with pytest.raises(ValueError, match="sampler must be one of"):
        answer_instruction(model, tok, e, "beam")


def test_scores_per_task_with_intervals(tok):
    right = Example("count", "How many words? to be", "two")
    wrong = Example("count", "How many words? to be", "three")
    model, _ = oracle_for(tok, right, tok.encode("two") + [tok.eot_id])
    scores = evaluate_instructions(
        model, tok, [right, wrong, right], "variable", 16, 8, progress=False
    )
    assert set(scores) == {"count", "all"}
    s = scores["count"]
    assert (s.correct, s.n) == (2, 3) and s.accuracy == pytest.approx(2 / 3)
    lo, hi = s.interval
    assert lo < 2 / 3 < hi and s.stop_rate == 1.0 and s.mean_forward_passes == 8
    assert "(2/3)" in str(s)


def test_sampled_grades_are_k_per_example_repeatable_and_greedy_at_temperature_0(tok):
    right = Example("count", "How many words? to be", "two")
    wrong = Example("count", "How many words? to be", "three")
    model, _ = oracle_for(tok, right, tok.encode("two") + [tok.eot_id])
    greedy = sampled_grades(model, tok, [right, wrong], k=3, temperature=0.0, gen_length=16)
    assert greedy == [[True] * 3, [False] * 3]
    # sampled: the oracle's answer is likely, not certain; one seed gives the same draws twice
    first = sampled_grades(model, tok, [right] * 4, k=5, temperature=3.0, gen_length=16, seed=7)
    again = sampled_grades(model, tok, [right] * 4, k=5, temperature=3.0, gen_length=16, seed=7)
    assert first == again and [len(g) for g in first] == [5] * 4
    assert 0 < sum(map(sum, first)) < 20  # at temperature 3 some answers go astray, not all


def test_sampled_grades_with_the_variable_length_sampler(tok):
    """The rollouts of train_rl --sampler variable: greedy finds the oracle's answer, a seed repeats
    its draws, and a sampler name the course lacks is refused."""
    right = Example("count", "How many words? to be", "two")
    model, _ = oracle_for(tok, right, tok.encode("two") + [tok.eot_id])
    greedy = sampled_grades(model, tok, [right], k=2, temperature=0.0, gen_length=16,
                            block_length=4, sampler="variable")  # fmt: skip
    assert greedy == [[True, True]]
    first = sampled_grades(model, tok, [right] * 3, k=4, temperature=2.0, gen_length=16,
                           block_length=4, seed=7, sampler="variable")  # fmt: skip
    again = sampled_grades(model, tok, [right] * 3, k=4, temperature=2.0, gen_length=16,
                           block_length=4, seed=7, sampler="variable")  # fmt: skip
    assert first == again and [len(g) for g in first] == [4] * 3
    assert 0 < sum(map(sum, first)) < 12
    with pytest.raises(ValueError, match="sampler must be one of"):
        sampled_grades(model, tok, [right], k=1, temperature=0.0, sampler="canvas")
