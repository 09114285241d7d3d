"""Lesson 3: the autoregressive twin's exact likelihood, its sampler and generative perplexity."""

import itertools

import pytest
import torch

from minillada.evaluation.autoregressive import (
    exact_nll,
    generate_ar,
    generative_perplexity,
    next_token_loss,
    shift_right,
    token_log_probs,
    unigram_entropy,
)


def test_ar_token_log_probs_match_brute_force_and_normalise(tiny_transformer):
    V, L, bos = 4, 3, 3
    # float64: teacher forcing and the one-prefix-at-a-time brute force run matmuls of other shapes,
    # whose fp32 rounding differs by CPU; in float64 they agree to ~1e-13
    model = tiny_transformer(causal=True, V=V, T=L, scale=8.0).double()
    seqs = torch.tensor(list(itertools.product(range(V), repeat=L)))  # all V^L sequences
    logp = token_log_probs(model, seqs, bos)  # teacher forcing, one pass
    for i, x in enumerate(seqs[:20]):  # one forward per prefix, reading only the last position
        brute = 0.0
        for j in range(L):
            inp = torch.cat([torch.tensor([bos]), x[:j]])[None]
            brute += model(inp)[0, -1].double().log_softmax(-1)[x[j]].item()
        assert logp[i].sum().item() == pytest.approx(brute, abs=1e-9)
    assert logp.sum(dim=1).exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    nll = exact_nll(model, seqs[:10], bos)
    assert nll.nats == pytest.approx(-logp[:10].mean().item(), abs=1e-9)
    assert next_token_loss(model, seqs[:10], bos).item() == pytest.approx(nll.nats, abs=1e-9)
    assert shift_right(torch.tensor([[5, 6, 7]]), 9).tolist() == [[9, 5, 6]]


def test_generative_perplexity_of_uniform_judge_is_v(fixed_model):
    V = 6
    judge = fixed_model(torch.full((V,), 1 / V))
    samples = torch.tensor([[0, 1, 2, 3], [1, 1, 1, 1]])
    gp = generative_perplexity(judge, samples, bos_id=5)
    assert gp.ppl == pytest.approx(V) and gp.nll.n == 2 and gp.nll.relation == "="
    assert unigram_entropy(samples, V).tolist() == pytest.approx([2.0, 0.0])


def test_generate_ar_keeps_prompt_and_bans_bos(tiny_transformer):
    model = tiny_transformer(causal=True, V=9, T=16, scale=3.0)
    out = generate_ar(
        model,
        torch.tensor([[1, 2, 3]]),
        5,
        bos_id=8,
        temperature=1.0,
        banned=[8],
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == (1, 8) and out[0, :3].tolist() == [1, 2, 3] and (out != 8).all()
    # greedy decoding is the argmax of the next-token logits, one token at a time, by hand
    greedy = generate_ar(model, torch.tensor([[1, 2, 3]]), 5, bos_id=8, temperature=0.0)
    x = [1, 2, 3]
    for _ in range(5):
        with torch.no_grad():
            x.append(int(model(torch.tensor([[8, *x]]))[0, -1].argmax()))
    assert greedy.tolist() == [x]
    with pytest.raises(ValueError, match="exceeds the model's context of 16"):
        generate_ar(model, torch.tensor([[1, 2, 3]]), 14, bos_id=8)  # BOS + 3 + 13 fit, not 14
