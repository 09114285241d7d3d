"""Lesson 1's sampler and the primitives every sampler is made of."""

import pytest
import torch

from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.sampling.generate import generate, sample
from minillada.sampling.primitives import gumbel_argmax, num_transfer_tokens, positions_to_reveal


def test_num_transfer_tokens_matches_llada():
    assert num_transfer_tokens(torch.tensor([10]), 4).tolist() == [[3, 3, 2, 2]]
    assert num_transfer_tokens(torch.tensor([8, 9]), 4).tolist() == [[2, 2, 2, 2], [3, 2, 2, 2]]
    with pytest.raises(ValueError, match="larger than the number of masked tokens"):
        num_transfer_tokens(torch.tensor([3]), 4)


def test_gumbel_argmax_samples_the_softmax():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    g = torch.Generator().manual_seed(0)
    draws = gumbel_argmax(logits.expand(20_000, 3), 1.0, g)
    freq = torch.bincount(draws, minlength=3).float() / 20_000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2]), atol=0.015)
    assert gumbel_argmax(logits, 0.0).item() == 0


def test_positions_to_reveal_by_hand():
    M = 9
    x = torch.tensor([[M, 1, M, M]])
    candidates = torch.tensor([[4, 5, 6, 7]])
    confidence = torch.tensor([[0.2, 0.99, 0.7, 0.5]], dtype=torch.float64)
    confidence[x != M] = float("-inf")  # position 1 is already revealed: never a candidate
    reveal = positions_to_reveal(confidence, 2)
    assert reveal.tolist() == [[False, False, True, True]]
    assert torch.where(reveal, candidates, x).tolist() == [[M, 1, 6, 7]]
    per_row = positions_to_reveal(confidence.expand(2, 4), torch.tensor([0, 3]))
    assert per_row.sum(dim=1).tolist() == [0, 3]
    with pytest.raises(ValueError, match="asked to reveal 4 tokens but only 3 are candidates"):
        positions_to_reveal(confidence, 4)
    with pytest.raises(ValueError, match="Pass k"):
        positions_to_reveal(confidence)


@torch.no_grad()
def lesson1_loop(model, mask_id, length, steps, num_samples, order, temperature, generator):
    """Lesson 1's sampler as it was written before it became a preset of generate: the whole
    canvas proposed by Gumbel-max in float64 with the mask banned, the k most confident (or a
    random k) masked positions revealed, k from LLaDA's schedule."""
    x = torch.full((num_samples, length), mask_id, dtype=torch.long)
    per_step = num_transfer_tokens(torch.full((num_samples,), length), steps)
    for k in range(steps):
        logits = model(x).double()
        logits[..., mask_id] = float("-inf")
        if temperature == 0:
            candidates = logits.argmax(-1)
        else:
            u = torch.rand(logits.shape, generator=generator, dtype=torch.float64)
            candidates = (logits / temperature - torch.log(-torch.log(u))).argmax(-1)
        if order == "confidence":
            confidence = logits.softmax(-1).gather(-1, candidates[..., None])[..., 0]
        else:
            confidence = torch.rand(x.shape, generator=generator, dtype=torch.float64)
        confidence = torch.where(x == mask_id, confidence, float("-inf"))
        for b in range(num_samples):
            top = confidence[b].topk(int(per_step[b, k])).indices
            x[b, top] = candidates[b, top]
    return x


@pytest.mark.parametrize("order", ["random", "confidence"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sample_is_lesson1_loop_and_a_preset_of_generate(tiny_transformer, order, temperature):
    model = tiny_transformer(V=9, T=24, scale=3.0)
    out = sample(
        model,
        8,
        length=24,
        steps=6,
        num_samples=3,
        order=order,
        temperature=temperature,
        generator=torch.Generator().manual_seed(1),
    )
    by_hand = lesson1_loop(model, 8, 24, 6, 3, order, temperature, torch.Generator().manual_seed(1))
    assert torch.equal(out.tokens, by_hand)
    remasking = {"random": "random", "confidence": "low_confidence"}[order]
    direct = generate(
        model,
        torch.empty(3, 0, dtype=torch.long),
        24,
        24,
        6,
        8,
        temperature=temperature,
        remasking=remasking,
        logits_mask_inf=True,
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.equal(out.tokens, direct)


@pytest.mark.parametrize("order", ["random", "confidence"])
def test_sampler_fills_every_mask_and_keeps_the_prompt(order, tiny_transformer):
    model = tiny_transformer(V=9, T=24)
    prompt = torch.tensor([1, 2, 3, 4])
    out = sample(
        model,
        mask_id=8,
        length=20,
        steps=5,
        num_samples=3,
        order=order,
        prompt=prompt,
        generator=torch.Generator().manual_seed(0),
        record=True,
    )
    assert out.tokens.shape == (3, 24)
    assert (out.tokens != 8).all()
    assert torch.equal(out.tokens[:, :4], prompt.expand(3, 4))
    masks_left = [(c == 8).sum(dim=1).tolist() for c in out.canvases]
    assert masks_left == [[20] * 3, [16] * 3, [12] * 3, [8] * 3, [4] * 3, [0] * 3]


def test_float32_noise_is_an_option_and_changes_the_draws(tiny_transformer):
    model = tiny_transformer(V=9, T=16, scale=3.0)
    kw = dict(length=16, steps=4, num_samples=4, generator=None)
    a = sample(model, 8, **{**kw, "generator": torch.Generator().manual_seed(0)})
    b = sample(
        model,
        8,
        **{**kw, "generator": torch.Generator().manual_seed(0)},
        noise_dtype=torch.float32,
    )
    assert (a.tokens != 8).all() and (b.tokens != 8).all()
    assert not torch.equal(a.tokens, b.tokens)  # other uniforms, other samples


def test_sampler_errors():
    cfg = TinyTransformerConfig(vocab_size=9, block_size=16, n_layer=1, n_head=2, n_embd=16)
    model = TinyTransformer(cfg)
    with pytest.raises(ValueError, match="exceeds the model's context of 16"):
        sample(model, 8, length=12, steps=4, prompt=torch.arange(5))
    with pytest.raises(ValueError, match="steps=20 gives 20 steps per block, more than the 10"):
        sample(model, 8, length=10, steps=20)
