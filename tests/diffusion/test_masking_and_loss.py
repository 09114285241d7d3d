import math

import torch
import torch.nn.functional as F

from minillada.diffusion.masking import (
    EPS,
    apply_mask,
    forward_process,
    mask_probability,
    sample_times,
)
from minillada.diffusion.objectives import diffusion_loss, masked_diffusion_loss


def test_mask_probability_endpoints():
    p = mask_probability(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(p, torch.tensor([EPS, 0.5 * (1 - EPS) + EPS, 1.0]))


def test_stratified_times_cover_the_unit_interval():
    t = sample_times(8, stratified=True, generator=torch.Generator().manual_seed(0))
    assert t.shape == (8,)
    # exactly one t in each eighth of [0, 1)
    assert torch.equal((t * 8).floor().long(), torch.arange(8))


def test_masking_rate_matches_p():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 10, (4, 20_000), generator=g)
    t = torch.tensor([0.0, 0.25, 0.5, 0.9])
    xt, masked, p = forward_process(x0, mask_id=10, t=t, generator=g)
    rate = masked.float().mean(dim=1)
    assert torch.allclose(rate, p, atol=0.01)
    assert torch.equal(xt[masked], torch.full_like(xt[masked], 10))
    assert torch.equal(xt[~masked], x0[~masked])


def test_apply_mask_is_deterministic_given_noise():
    x0 = torch.tensor([[1, 2, 3, 4]])
    u = torch.tensor([[0.1, 0.6, 0.3, 0.9]])
    xt, masked = apply_mask(x0, torch.tensor([0.5]), u, mask_id=9)
    assert xt.tolist() == [[9, 2, 9, 4]]
    assert masked.tolist() == [[True, False, True, False]]


def test_loss_by_hand():
    # Two rows of length 2. Row 0: one masked token at p = 0.5; row 1: both masked at p = 1.
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    x0 = torch.tensor([[0, 1], [1, 0]])
    masked = torch.tensor([[True, False], [True, True]])
    p = torch.tensor([0.5, 1.0])
    ce0 = -F.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]
    ce1 = -F.log_softmax(torch.tensor([0.0, 1.0]), 0)[1]
    expected = (ce0 / 0.5 + 2 * ce1) / 4  # divided by all B * L = 4 slots
    assert torch.allclose(masked_diffusion_loss(logits, x0, masked, p), expected)


def test_loss_is_unbiased_for_uniform_predictor():
    # A model that predicts uniformly over V has CE = log V at every masked position; the 1/p
    # weighting makes the expected loss exactly log V per token, whatever t is.
    V = 5

    class Uniform(torch.nn.Module):
        def forward(self, idx):
            return torch.zeros(*idx.shape, V)

    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, V - 1, (512, 64), generator=g)
    losses = [diffusion_loss(Uniform(), x0, mask_id=V - 1, generator=g).item() for _ in range(20)]
    assert abs(sum(losses) / len(losses) - math.log(V)) < 0.02
