"""Log-probabilities a masked diffusion policy can give, for reinforcement learning (lesson 9).

A GPT gives log pi(completion | prompt) exactly in one pass. A masked diffusion model gives only
estimates, and a policy-gradient ratio pi_theta / pi_old of two noisy estimates is biased and can
explode. Two estimates and one rule:

* **d1's one-step estimate** (Zhao et al. 2025, diffu-GRPO): mask the whole completion, mask each
  prompt token with probability ``p_mask``, and read every completion token's log-probability from
  that one pass: log pi(o_k | q', all masked). Deterministic at ``p_mask = 0``; it is the t = 1
  slice of the ELBO, a mean-field surrogate, not a bound.
* **A sequence ELBO** (LLaDA's l-estimator of lesson 3, as LLaDA 1.5's VRPO uses it): n draws, each
  masking exactly l completion tokens with l spread evenly over 1..C (low discrepancy, one mask per
  draw), weighted C / l: a lower bound on log pi(completion | prompt) in expectation. With
  ``complementary=True`` every draw is paired with the mask of the other C - l tokens (DiffuCoder's
  coupled pass): each token is scored once per pair, and the pair's two halves are negatively
  correlated.
* **The sampler's own trajectory** (TraceRL, Wang et al. 2025): the rollout recorded the step at
  which each completion token was revealed. Replaying it, each token is scored from the canvas the
  sampler saw when it chose that token: the earlier-revealed tokens in place, the rest masked. With
  ``group=1`` that is one pass per step, and each token gets the log-probability the model gave it
  on the very canvas it was drawn from (not the probability of the whole trajectory: which
  positions a step reveals depends on the draws at the others, and is not scored). ``group=s``
  scores s consecutive steps from one pass, the canvas before the first of them; ``group=K`` (all
  steps) is the one-step estimate at p_mask 0. Nothing is drawn: the old, current and reference
  policies see the same canvases, so the log-ratio has no estimation noise at all.
* **Block by block, as the variable-length sampler sees it** (``block_logprobs``): iLLaDA's
  sampler appends one block of masks at a time and denoises it with nothing after it. d1's one-step
  estimate taken on those canvases scores block j from one pass over the prompt, the blocks before
  it in place, and block j fully masked, with no position after it: one pass per block, nothing
  drawn but the prompt mask. With a single block of all C positions it is the one-step estimate.
* **Common random numbers**: draw the masks once (``draw_one_step``, ``draw_elbo``) and score the
  current, the old and the reference policy on the *same* draws. The noise of the masks then cancels
  in the log-ratio; a model compared with itself gives exactly 0 (VRPO's antithetic sampling, d1's
  shared seeds).

Prompts of different lengths are left-padded (``prompt_keep`` marks real tokens, as lesson 8's
batched sampler does) and each row is positioned from its own first token. Shapes: B rows, P prompt
positions, C completion positions, n draws.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minillada.diffusion.guidance import cuts_logits, model_logits
from minillada.diffusion.likelihood import mask_exactly, spread_mask_counts
from minillada.models.attention import row_positions
from minillada.runtime import upcast


def check_p_mask(p_mask: float) -> None:
    if not 0.0 <= p_mask < 1.0:
        raise ValueError(
            f"p_mask is the probability of masking each prompt token and must be in [0, 1); got "
            f"{p_mask}. d1 uses 0.15; 0 makes the one-step estimate deterministic."
        )


@dataclass(frozen=True)
class OneStepDraw:
    """The random part of one one-step estimate: which prompt positions are masked."""

    prompt_masked: torch.Tensor  # (B, P) bool; never true on padding


@dataclass(frozen=True)
class ElboDraws:
    """The random part of a sequence ELBO estimate: n masks of the completion and their weights."""

    masked: torch.Tensor  # (n, B, C) bool: draw j masks these completion positions of row b
    weights: torch.Tensor  # (n, B) float64: C / l, l = the number masked in that draw

    def __len__(self) -> int:
        return self.masked.shape[0]


def draw_one_step(
    prompt_keep: torch.Tensor, p_mask: float, generator: torch.Generator | None = None
) -> OneStepDraw:
    """Mask each real prompt token independently with probability ``p_mask`` (drawn on the CPU, so
    a seed gives the same draw on any device). prompt_keep (B, P) bool."""
    check_p_mask(p_mask)
    u = torch.rand(prompt_keep.shape, generator=generator).to(prompt_keep.device)
    return OneStepDraw(prompt_masked=(u < p_mask) & prompt_keep.bool())


def draw_elbo(
    batch: int,
    completion_len: int,
    n: int,
    generator: torch.Generator | None = None,
    complementary: bool = False,
) -> ElboDraws:
    """n draws per row with mask counts spread evenly over 1..C from a random start (lesson 3's
    ``spread_mask_counts``), each a uniformly random subset of that size; with ``complementary``
    the other C - l tokens follow as n more draws (the full mask when l = C, which keeps the counts
    of the second half uniform on 1..C, so each half is unbiased on its own)."""
    C = completion_len
    if n < 1 or C < 1:
        raise ValueError(f"need at least one draw and one completion token, got n={n}, C={C}")
    starts = torch.randint(1, C + 1, (batch,), generator=generator)
    counts = torch.stack([spread_mask_counts(C, n, int(k)) for k in starts], dim=1)  # (n, B)
    masked = mask_exactly(counts.reshape(-1), C, generator).view(n, batch, C)
    if complementary:
        full = (counts == C)[..., None]  # (n, B, 1): l = C has no complement; mask all again
        other = torch.where(full, torch.ones_like(masked), ~masked)
        masked = torch.cat([masked, other])  # (2n, B, C)
        counts = torch.cat([counts, torch.where(counts == C, C, C - counts)])
    return ElboDraws(masked=masked, weights=C / counts.double())


@dataclass(frozen=True)
class TrajectoryDraw:
    """Which pass scores each completion token when the rollout is replayed: no randomness, only
    the rollout's own reveal order."""

    chunk: torch.Tensor  # (B, C) long: token (b, c) is scored by pass chunk[b, c]; earlier chunks
    # are in place in that pass, this and later ones masked

    @property
    def passes(self) -> int:
        return int(self.chunk.max()) + 1


def draw_trajectory(reveal_step: torch.Tensor, group: int = 1) -> TrajectoryDraw:
    """reveal_step (B, C): the step (1..K) at which the sampler revealed each completion token
    (``Trace.reveal_step()`` cut to the completion). Steps are taken ``group`` at a time: the K
    steps become ceil(K / group) passes. A position still masked at the end (-1: the model proposed
    the mask id itself there, which the sampler leaves masked) is scored with the last step's."""
    if group < 1:
        raise ValueError(f"group is the number of steps one pass scores, must be >= 1; got {group}")
    if (reveal_step == 0).any() or (reveal_step < -1).any():
        raise ValueError(
            "reveal_step must hold the step (>= 1) that revealed each completion position, or -1 "
            "where none did; got a prompt position (0): pass trace.reveal_step()[:, P:]"
        )
    last = int(reveal_step.max())
    step = torch.where(reveal_step == -1, max(last, 1), reveal_step.long())
    return TrajectoryDraw(chunk=(step - 1) // group)


def _check_draw(draw: OneStepDraw, prompt: torch.Tensor) -> None:
    if draw.prompt_masked.shape != prompt.shape:
        raise ValueError(
            f"the draw masks a prompt of shape {tuple(draw.prompt_masked.shape)} but the prompt "
            f"has shape {tuple(prompt.shape)}: draw once per batch, then reuse it for every policy"
        )


def _completion_log_probs(
    model: Callable,
    prompt: torch.Tensor,
    completion: torch.Tensor,
    canvas: torch.Tensor,
    prompt_keep: torch.Tensor | None,
    scored_from: int = 0,
) -> torch.Tensor:
    """log p(completion_k | canvas) at the completion positions from ``scored_from`` on:
    (B, P + C) canvas -> (B, C - scored_from)."""
    P = prompt.shape[1]
    keep = positions = None
    if prompt_keep is not None:
        keep = torch.cat([prompt_keep.bool(), torch.ones_like(completion, dtype=torch.bool)], 1)
        positions = row_positions(keep)  # (B, P + C): each row counted from its first token
    first = P + scored_from
    logits = model_logits(model, canvas, keep, positions, logits_from=first)
    if not cuts_logits(model):
        logits = logits[:, first:]  # (B, C - scored_from, V)
    logp = F.log_softmax(upcast(logits), dim=-1)  # float32 at least: bf16 log-probs are coarse
    return logp.gather(-1, completion[:, scored_from:].unsqueeze(-1)).squeeze(-1)


def one_step_logprobs(
    model: Callable,
    prompt: torch.Tensor,
    completion: torch.Tensor,
    mask_id: int,
    draw: OneStepDraw,
    prompt_keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """d1's per-token estimate, log pi(o_k | q'), from one pass with the completion fully masked and
    the prompt masked where ``draw`` says: prompt (B, P), completion (B, C) -> (B, C), with the
    graph (differentiate it for the policy gradient; wrap in no_grad for old/reference)."""
    _check_draw(draw, prompt)
    canvas = torch.cat(
        [prompt.masked_fill(draw.prompt_masked, mask_id), torch.full_like(completion, mask_id)], 1
    )  # (B, P + C)
    return _completion_log_probs(model, prompt, completion, canvas, prompt_keep)


def sequence_elbo(
    model: Callable,
    prompt: torch.Tensor,
    completion: torch.Tensor,
    mask_id: int,
    draws: ElboDraws,
    prompt_keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ELBO estimate of log pi(completion | prompt) in nats per row, the mean over ``draws`` of
    (C / l) sum over the masked positions of log p: (B,), with the graph. The prompt is never
    masked. Its expectation is lesson 3's ``estimate_conditional_nll`` with the sign flipped."""
    n, B, C = draws.masked.shape
    if (B, C) != tuple(completion.shape):
        raise ValueError(
            f"the draws mask completions of shape {(B, C)} but the completion has shape "
            f"{tuple(completion.shape)}: draw once per batch, then reuse it for every policy"
        )
    total = torch.zeros(B, dtype=torch.float64, device=completion.device)
    for masked, weight in zip(draws.masked, draws.weights, strict=True):  # (B, C), (B,)
        masked = masked.to(completion.device)
        canvas = torch.cat([prompt, completion.masked_fill(masked, mask_id)], 1)  # (B, P + C)
        logp = _completion_log_probs(model, prompt, completion, canvas, prompt_keep)  # (B, C)
        total = total + (logp.double() * masked).sum(1) * weight.to(total.device)
    return total / n


def trajectory_logprobs(
    model: Callable,
    prompt: torch.Tensor,
    completion: torch.Tensor,
    mask_id: int,
    draw: TrajectoryDraw,
    prompt_keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token log-probabilities along the rollout's own trajectory (TraceRL's estimate): token
    (b, c) is read from the pass whose canvas holds every token of an earlier chunk and masks the
    rest. prompt (B, P), completion (B, C) -> (B, C), with the graph. ``draw.passes`` passes."""
    if draw.chunk.shape != completion.shape:
        raise ValueError(
            f"the trajectory covers completions of shape {tuple(draw.chunk.shape)} but the "
            f"completion has shape {tuple(completion.shape)}"
        )
    chunk = draw.chunk.to(completion.device)
    out = None
    for j in range(draw.passes):
        scored = chunk == j  # (B, C)
        if not scored.any():
            continue
        canvas = torch.cat([prompt, completion.masked_fill(chunk >= j, mask_id)], 1)  # (B, P + C)
        logp = _completion_log_probs(model, prompt, completion, canvas, prompt_keep)  # (B, C)
        out = torch.where(scored, logp, torch.zeros_like(logp) if out is None else out)
    return out


def block_logprobs(
    model: Callable,
    prompt: torch.Tensor,
    completion: torch.Tensor,
    mask_id: int,
    block_length: int,
    draw: OneStepDraw,
    prompt_keep: torch.Tensor | None = None,
    needed: torch.Tensor | None = None,
) -> torch.Tensor:
    """d1's one-step estimate on the variable-length sampler's canvases: block j of the
    completion is read from one pass over [prompt (masked where ``draw`` says), completion blocks
    0..j-1, block_length masks], the canvas ending with the block, as ``var_generate`` builds it.
    prompt (B, P), completion (B, C) -> (B, C), with the graph. ``needed`` (B, C) bool: blocks
    where no row needs a score are skipped (their log-probabilities are 0): an answer that stopped
    in its second block costs no third pass."""
    B, C = completion.shape
    if block_length < 1 or C % block_length:
        raise ValueError(
            f"the completion's {C} positions are not whole blocks of {block_length}: pass the "
            "block length the rollout was sampled with (a divisor of its gen_length)"
        )
    _check_draw(draw, prompt)
    seen_prompt = prompt.masked_fill(draw.prompt_masked, mask_id)  # (B, P)
    block = torch.full_like(completion[:, :block_length], mask_id)  # (B, L)
    scored: dict[int, torch.Tensor] = {}
    for start in range(0, C, block_length):
        end = start + block_length
        if needed is not None and not needed[:, start:end].any():
            continue
        canvas = torch.cat([seen_prompt, completion[:, :start], block], 1)  # (B, P + end)
        scored[start] = _completion_log_probs(  # (B, L): the block's own positions
            model, prompt, completion[:, :end], canvas, prompt_keep, scored_from=start
        )
    like = next(iter(scored.values()), None)
    dtype = torch.float32 if like is None else like.dtype
    zeros = torch.zeros(B, block_length, dtype=dtype, device=completion.device)
    return torch.cat([scored.get(s, zeros) for s in range(0, C, block_length)], 1)  # (B, C)
