"""How good is a masked diffusion model? Monte Carlo estimates of its negative ELBO.

Lesson 1 introduces the t-estimator: the pre-training loss itself, averaged over many (t, mask)
draws,
is an upper bound on the negative log-likelihood in nats per token (LLaDA Eq. 3 / MDLM Eq. 10).
Shapes: N = number of windows, L = window length, V = vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minillada.masking import EPS, apply_mask, mask_probability


@dataclass
class BoundEstimate:
    """A Monte Carlo estimate of the negative ELBO, in nats per token, with its standard error."""

    nats: float  # mean bound, nats per token (an upper bound on the NLL)
    stderr: float  # standard error of ``nats``
    num_sequences: int
    samples_per_sequence: int

    @property
    def bits(self) -> float:
        return self.nats / math.log(2)

    def __str__(self) -> str:
        return (
            f"<= {self.nats:.3f} ± {self.stderr:.3f} nats/token = {self.bits:.3f} bits/token "
            f"({self.num_sequences} sequences x {self.samples_per_sequence} samples)"
        )


@torch.no_grad()
def nelbo_per_sequence(
    model: torch.nn.Module,
    x0: torch.Tensor,
    mask_id: int,
    samples: int = 8,
    batch_size: int = 64,
    eps: float = EPS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sequence t-estimator of the negative ELBO in nats per token, float64 (N,).

    Each sequence gets ``samples`` times stratified over [0, 1): t_k = (u + k) / samples, each with
    its
    own random mask; the estimate is the mean over k of sum_masked CE / p(t_k) / L.
    """
    N, L = x0.shape
    device = x0.device
    rows = x0.repeat_interleave(samples, dim=0)  # (N*K, L): sequence n occupies rows n*K .. n*K+K-1
    u0 = torch.rand(N, 1, generator=generator)
    t = ((u0 + torch.arange(samples)) / samples).reshape(-1)  # (N*K,) stratified per sequence
    noise = torch.rand(rows.shape, generator=generator)
    totals = torch.zeros(N * samples, dtype=torch.float64)
    for start in range(0, len(rows), batch_size):
        sl = slice(start, start + batch_size)
        xt, masked = apply_mask(rows[sl], t[sl].to(device), noise[sl].to(device), mask_id, eps)
        logits = model(xt)  # (b, L, V)
        ce = F.cross_entropy(logits.float().transpose(1, 2), rows[sl], reduction="none")  # (b, L)
        weighted = (ce * masked).double().sum(dim=1) / mask_probability(t[sl], eps).double().to(
            device
        )
        totals[sl] = weighted.cpu() / L
    return totals.view(N, samples).mean(dim=1)  # (N,)


def estimate_nelbo(
    model: torch.nn.Module,
    windows: torch.Tensor,
    mask_id: int,
    samples: int = 8,
    batch_size: int = 64,
    eps: float = EPS,
    seed: int = 0,
) -> BoundEstimate:
    """The t-estimator over ``windows`` (N, L) with a fixed seed, so repeated evaluations are
    comparable.

    The standard error is taken across sequences: it counts Monte Carlo noise and the spread between
    windows, so it is conservative when ``windows`` tiles the whole validation text.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    per_seq = nelbo_per_sequence(
        model, windows.to(device), mask_id, samples, batch_size, eps, generator
    )
    model.train(was_training)
    n = len(per_seq)
    stderr = per_seq.std().item() / math.sqrt(n) if n > 1 else float("nan")
    return BoundEstimate(per_seq.mean().item(), stderr, n, samples)
