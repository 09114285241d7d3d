"""Lesson 6's two SFT objectives, each on a worked example whose loss is computed by hand."""

import math

import pytest
import torch

from minillada.diffusion.masking import mask_probability, sample_times
from minillada.diffusion.objectives import masked_diffusion_loss
from minillada.training.sft import (
    llada_sft_batches,
    llada_sft_loss,
    llada_sft_loss_from_noise,
    pack_examples,
    packed_batches,
    pad_sft_batch,
    variable_length_sft_loss,
)

EOS, MASK = 9, 8


def test_llada_rows_are_padded_with_eos_as_answer():
    ids, prompt_lengths = pad_sft_batch([[1, 2], [3]], [[4], [5, 6, 7]], EOS)
    assert ids.tolist() == [[1, 2, 4, EOS], [3, 5, 6, 7]]
    assert prompt_lengths.tolist() == [2, 1]
    with pytest.raises(ValueError, match="Example 1 has an empty answer"):
        pad_sft_batch([[1], [2]], [[3], []], EOS)
    with pytest.raises(ValueError, match="as many prompts as answers"):
        pad_sft_batch([[1]], [[2], [3]], EOS)


def test_llada_sft_loss_by_hand(fixed_model):
    model = fixed_model(torch.full((10,), 0.1))  # uniform over 10 ids: CE = log 10 everywhere
    ids, prompt_lengths = pad_sft_batch([[1], [1]], [[2, 3], [4]], EOS)  # row 1 = [1, 4, EOS]
    t = torch.tensor([0.5, 1.0])
    u = torch.tensor([[0.0, 0.1, 0.9], [0.2, 0.3, 0.4]])
    # row 0: p = 0.5005 masks positions 0 and 1; position 0 is the prompt, restored: one masked
    # answer token, answer length 2. Row 1: p = 1 masks all; the prompt restored: two masked
    # (the answer and its EOS padding), answer length 2.
    p0 = (1 - 1e-3) * 0.5 + 1e-3
    want = ((math.log(10) / p0) / 2 + (2 * math.log(10) / 1.0) / 2) / 2
    got = llada_sft_loss_from_noise(model, ids, prompt_lengths, t, u, MASK)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # the generator-driven version draws t and u and gives a finite positive loss
    loss = llada_sft_loss(model, ids, prompt_lengths, MASK, torch.Generator().manual_seed(0))
    assert loss.item() > 0


def test_the_prompt_is_never_masked(tiny_transformer):
    model = tiny_transformer(V=10, T=8)
    seen = []

    def spy(ids, attention_mask=None):
        seen.append(ids.clone())
        return model(ids)

    ids, prompt_lengths = pad_sft_batch([[1, 2, 3], [4]], [[5], [6, 7]], EOS)
    llada_sft_loss_from_noise(spy, ids, prompt_lengths, torch.ones(2), torch.zeros(2, 4), MASK)
    assert seen[0].tolist() == [[1, 2, 3, MASK], [4, MASK, MASK, MASK]]


def test_examples_are_packed_back_to_back_with_one_eos():
    windows = pack_examples([[1, 2], [3]], [[4], [5, 6]], EOS, window=3)
    assert windows.tolist() == [[1, 2, 4], [EOS, 3, 5]]  # the tail [6, EOS] is dropped
    with pytest.raises(ValueError, match="less than one window"):
        pack_examples([[1]], [[2]], EOS, window=8)
    with pytest.raises(ValueError, match="Example 1 has an empty answer"):
        pack_examples([[1], [2]], [[3], []], EOS, window=2)


def test_batches_for_the_training_loop():
    g = torch.Generator().manual_seed(0)
    ids, prompt_lengths = llada_sft_batches([[1, 2, 3], [4]], [[5], [6, 7]], EOS, 6)(g)
    assert ids.shape == (6, 4) and set(prompt_lengths.tolist()) <= {1, 3}
    windows = pack_examples([[1, 2], [3]], [[4], [5, 6]], EOS, window=3)
    assert packed_batches(windows, 5)(g).shape == (5, 3)


def test_variable_length_loss_is_the_pretraining_loss(fixed_model):
    model = fixed_model(torch.full((10,), 0.1))
    windows = pack_examples([[1, 2], [3]], [[4], [5, 6]], EOS, window=3)
    got = variable_length_sft_loss(model, windows, MASK, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    t = sample_times(2, stratified=True, generator=g)
    u = torch.rand((2, 3), generator=g)
    masked = u < mask_probability(t)[:, None]
    logits = torch.log(torch.full((2, 3, 10), 0.1))
    want = masked_diffusion_loss(logits, windows, masked, mask_probability(t))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
