"""Lesson 2's quality measures for character samples, and the trace plots (smoke)."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

from minillada.evaluation.char_quality import (
    char_entropy,
    char_quality,
    known_word_fraction,
    vocabulary,
)
from minillada.sampling.generate import generate
from minillada.sampling.traces import (
    denoising_text,
    plot_reveal_heatmap,
    plot_reveal_order,
    plot_strategy_comparison,
)

matplotlib.use("Agg")


def test_known_word_fraction_and_entropy():
    vocab = vocabulary("To be, or not to be: that is the question. O'er the hill")
    assert {"to", "be", "question", "o'er"} <= vocab
    assert known_word_fraction(["to be or xyzzy"], vocab) == 0.75
    assert math.isnan(known_word_fraction(["  ,,  "], vocab))
    assert char_entropy(["abab"]) == pytest.approx(1.0)
    assert char_entropy(["aaaa"]) == 0.0
    q = char_quality(["the the the", "to be"], vocab)
    assert q.known_words == 1.0 and q.num_words == 5
    assert "known words 100.0% of 5" in str(q)


def test_trace_plots_run():
    V, MASK = 6, 5
    chars = "abcde_"

    def model(ids):
        g = torch.Generator().manual_seed(int(ids.sum()))
        logits = torch.randn(*ids.shape, V, generator=g)
        logits[..., MASK] = -1e4
        return logits

    def decode(ids):
        return "".join(chars[i] for i in ids)

    traces = {}
    for name, kw in [("low", {}), ("thr", dict(threshold=0.5))]:
        steps = None if kw else 8
        _, traces[name] = generate(
            model, torch.tensor([[0, 1]]), 16, 8, steps, MASK, trace=True, **kw
        )
    tr = traces["low"]
    text = denoising_text(tr, decode, steps=[0, 4, 8], width=8)
    assert text.splitlines()[0] == "step    0: ________"
    assert text.splitlines()[-1].strip() == decode(tr.tokens[0, 10:].tolist())
    plot_reveal_heatmap(tr)
    plot_reveal_order(tr, decode, width=8)
    plot_strategy_comparison(traces)
    matplotlib.pyplot.close("all")
