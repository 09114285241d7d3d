"""How good is a masked diffusion model? Monte Carlo estimates of its negative ELBO.

Lesson 1 introduces the t-estimator: the pre-training loss itself, averaged over many (t, mask)
draws, is an upper bound on the negative log-likelihood in nats per token
(LLaDA Eq. 3 / MDLM Eq. 10). Lesson 3 adds LLaDA's conditional l-estimator (paper Eq. 6,
ML-GSAI/LLaDA's ``get_log_likelihood.py``): to bound -log p(answer | prompt), draw the number l
of masked answer tokens uniformly from 1..L (stratified over a batch), mask exactly l answer
positions and weight their cross-entropy by L / l. Both estimators have the same expectation;
the l-estimator has lower variance, and for a one-token answer it is exact:
log p(answer | prompt) in one forward pass. Every estimate is returned as a
``minillada.estimate.Estimate``.

Shapes: N = number of windows, L = window (or answer) length, P = prompt length, V = vocabulary,
b = Monte Carlo mini-batch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from minillada.diffusion.guidance import guided_logits, model_logits
from minillada.diffusion.masking import EPS, apply_mask, mask_probability
from minillada.estimate import Estimate
from minillada.runtime import mask_id_of, model_device, upcast


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
    its own random mask; the estimate is the mean over k of sum_masked CE / p(t_k) / L.
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
        logits = model_logits(model, xt)  # (b, L, V)
        ce = F.cross_entropy(upcast(logits).transpose(1, 2), rows[sl], reduction="none")  # (b, L)
        p = mask_probability(t[sl], eps).double().to(device)  # (b,)
        totals[sl] = ((ce * masked).double().sum(dim=1) / p).cpu() / L
    return totals.view(N, samples).mean(dim=1)  # (N,)


def estimate_nelbo(
    model: torch.nn.Module,
    windows: torch.Tensor,
    mask_id: int | None = None,
    samples: int = 8,
    batch_size: int = 64,
    eps: float = EPS,
    seed: int = 0,
) -> Estimate:
    """The t-estimator over ``windows`` (N, L) with a fixed seed, so repeated evaluations are
    comparable: a bound in nats per token, one value per window.

    The standard error is taken across sequences: it counts Monte Carlo noise and the spread
    between windows, so it is conservative when ``windows`` tiles the whole validation text.
    """
    mask_id = mask_id_of(model, mask_id)
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    windows = windows.to(model_device(model))
    per_seq = nelbo_per_sequence(model, windows, mask_id, samples, batch_size, eps, generator)
    model.train(was_training)
    detail = f"{len(per_seq)} sequences x {samples} samples"
    return Estimate.of(per_seq, detail=detail)


# --- Lesson 3: LLaDA's conditional estimator (ML-GSAI/LLaDA get_log_likelihood.py) ------------


def spread_mask_counts(answer_len: int, batch_size: int, k: int) -> torch.Tensor:
    """LLaDA's stratified mask counts for one mini-batch, starting at k in 1..L: (b,) long.

    round(linspace(k, k + (b - 1) L / b, b)), wrapped into 1..L by ((x - 1) mod L) + 1, so the
    b rows sweep the range of l evenly instead of drawing it b times independently.
    """
    L, b = answer_len, batch_size
    x = torch.linspace(float(k), k + (b - 1) * (L / b), b, dtype=torch.float64).round().long()
    return ((x - 1) % L) + 1


def stratified_mask_counts(
    answer_len: int, batch_size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """k ~ U{1..L}, then ``spread_mask_counts``: one stratified draw of l per row, (b,)."""
    k = int(torch.randint(1, answer_len + 1, (1,), generator=generator))
    return spread_mask_counts(answer_len, batch_size, k)


def mask_exactly(
    counts: torch.Tensor, length: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Row i gets exactly counts[i] masked positions out of ``length``, a uniformly random subset
    (the ``torch.randperm`` of get_log_likelihood.py, for a whole batch at once): bool (b, L)."""
    noise = torch.rand(len(counts), length, generator=generator)  # (b, L)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # a random permutation of 0..L-1 per row
    return ranks < counts[:, None]


def l_estimator_terms(
    logits: torch.Tensor, answer: torch.Tensor, masked: torch.Tensor
) -> torch.Tensor:
    """One l-estimator sample per row: (L / l_i) sum over masked positions of -log p(answer_j),
    with l_i = the number of masked positions of row i (at least 1). logits (b, L, V) at the answer
    positions, answer (L,), masked bool (b, L) -> float64 (b,)."""
    b, L = masked.shape
    ce = F.cross_entropy(upcast(logits).transpose(1, 2), answer.expand(b, L), reduction="none")
    n_masked = masked.sum(dim=1).double()  # (b,)
    return (ce.double() * masked).sum(dim=1) * (L / n_masked)


Method = Literal["l", "t"]


@torch.no_grad()
def conditional_nelbo_samples(
    model,
    prompt: torch.Tensor,
    answer: torch.Tensor,
    mask_id: int | None = None,
    mc_num: int = 128,
    batch_size: int = 16,
    cfg_scale: float = 0.0,
    method: Method = "l",
    eps: float = EPS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``mc_num`` Monte Carlo samples of an upper bound on -log p(answer | prompt), nats summed over
    the answer, float64 (mc_num,). Only answer positions are ever masked; the prompt stays clean.

    method "l" (LLaDA Eq. 6): row i masks exactly l_i answer tokens, l stratified over each
    mini-batch (``stratified_mask_counts``), sample = (L / l_i) sum_masked CE.
    method "t" (the pre-training loss, LLaDA Eq. 3, for comparison): t stratified over each
    mini-batch, every answer token masked with probability p(t), sample = (1 / p(t)) sum_masked CE.
    Both have the same expectation (eps -> 0): a given set of l masked tokens carries total weight
    int_0^1 t^(l-1) (1-t)^(L-l) dt = 1 / (l C(L, l)) under "t", and (1/L) (L/l) / C(L, l) under "l".
    """
    mask_id = mask_id_of(model, mask_id)
    if method not in ("l", "t"):
        raise ValueError(f"method must be 'l' (LLaDA's estimator) or 't', got {method!r}.")
    prompt, answer = torch.as_tensor(prompt).reshape(-1), torch.as_tensor(answer).reshape(-1)
    P, L = len(prompt), len(answer)
    if L == 0:
        raise ValueError("The answer is empty; there is nothing to score.")
    device = model_device(model)
    seq = torch.cat([prompt, answer]).to(device)  # (P + L,)
    target = answer.to(device)
    is_prompt = torch.arange(P + L, device=device) < P  # (P + L,)
    samples = []
    for start in range(0, mc_num, batch_size):
        b = min(batch_size, mc_num - start)
        if method == "l":
            counts = stratified_mask_counts(L, b, generator)  # (b,)
            masked = mask_exactly(counts, L, generator)  # (b, L), weight L / l_i
        else:
            t = (torch.rand((), generator=generator) + torch.arange(b)) / b  # (b,) stratified
            p = mask_probability(t, eps)
            masked = torch.rand(b, L, generator=generator) < p[:, None]  # (b, L)
            weight = 1.0 / p.double()
        masked = masked.to(device)  # drawn on the CPU so a seed gives the same masks anywhere
        x = seq.expand(b, -1).clone()  # (b, P + L)
        x[:, P:] = torch.where(masked, mask_id, x[:, P:])
        logits = guided_logits(model, x, is_prompt, mask_id, cfg_scale)[:, P:]  # (b, L, V)
        if method == "l":
            per_row = l_estimator_terms(logits, target, masked).cpu()  # (b,)
        else:
            ce = F.cross_entropy(
                upcast(logits).transpose(1, 2), target.expand(b, -1), reduction="none"
            )  # (b, L)
            per_row = (ce.double() * masked).sum(dim=1).cpu() * weight  # (b,)
        samples.append(per_row)
    return torch.cat(samples)


def estimate_conditional_nll(
    model,
    prompt: torch.Tensor,
    answer: torch.Tensor,
    mask_id: int | None = None,
    mc_num: int = 128,
    batch_size: int = 16,
    cfg_scale: float = 0.0,
    method: Method = "l",
    seed: int = 0,
) -> Estimate:
    """LLaDA's conditional likelihood estimate with a fixed seed (so options scored with the same
    seed share their random masks): an upper bound on -log p(answer | prompt), nats summed over the
    answer; its ``log_likelihood`` is what get_log_likelihood.py returns. A one-token answer takes
    one forward pass and is exact (standard error 0)."""
    mask_id = mask_id_of(model, mask_id)
    answer = torch.as_tensor(answer).reshape(-1)
    exact = len(answer) == 1 and method == "l"
    if exact:
        mc_num = batch_size = 1  # l = 1 always, weight 1: -log p(answer | prompt) exactly
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    generator = torch.Generator().manual_seed(seed)
    s = conditional_nelbo_samples(
        model, prompt, answer, mask_id, mc_num, batch_size, cfg_scale, method, generator=generator
    )
    if isinstance(model, torch.nn.Module):
        model.train(was_training)
    detail = f"{len(answer)} answer tokens, {len(s)} samples" + (", exact" if exact else "")
    return Estimate.of(
        s,
        exact=exact,
        relation="=" if exact else "<=",
        per_token=False,
        quantity="-log p(answer | prompt)",
        detail=detail,
    )
