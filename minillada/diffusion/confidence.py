"""iLLaDA's confidence-based score of an answer given a context (lesson 7's multiple choice).

The authors' ``eval_illada.py`` (``get_loglikelihood_confidence``) scores a candidate answer of L
tokens by revealing it the way a greedy sampler would, but with the *true* tokens:

1. start from ``context + [MASK] * L``;
2. L times: one forward pass; at every still-masked answer position take the cross-entropy of the
   true answer token; the position with the smallest one (the first of equal ones, as
   ``torch.min``) is added to the sum and revealed with its true token;
3. the score is minus the sum.

It is deterministic (L forward passes, no Monte Carlo noise) and a *ranking* score, not a bound
on the likelihood: each term conditions on the answer tokens already revealed, in the order the
model is most sure of. Options of the evaluation: ``eos_id`` (the authors' ``padd_eos``) appends
one EOS after the whole input before each forward pass and drops its logit; a BOS in front of the
context (``add_bos_token``) is the caller's, in the context ids. iLLaDA reports HellaSwag 76.6
with this score against 74.3 with the Monte Carlo likelihood (the lesson-3 estimator).

``confidence_scores`` scores several answers to one context (HellaSwag's four endings) in one
batch per step: the rows are left-padded so that every row's tokens sit at the right end, padded
keys are masked out, each row's positions are counted from its first real token, and a row leaves
the batch once its answer is revealed. Each row gets the score it gets alone (equal to
``confidence_score`` up to the rounding of longer sums: to 1e-9 in float64).

Shapes: P = context length, L = answer length, V = vocabulary, B = answers in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minillada.diffusion.guidance import model_logits
from minillada.models.attention import row_positions
from minillada.runtime import mask_id_of, model_device, upcast


@dataclass(frozen=True)
class ConfidenceScore:
    """The score, and how it was built."""

    score: float  # minus the sum of the chosen cross-entropies, nats
    order: list[int]  # answer positions (0-based) in the order they were revealed
    losses: list[float]  # the cross-entropy added at each step, nats

    @property
    def forward_passes(self) -> int:
        return len(self.losses)


@torch.no_grad()
def confidence_score(
    model,
    context_ids: torch.Tensor,
    answer_ids: torch.Tensor,
    mask_id: int | None = None,
    eos_id: int | None = None,
) -> ConfidenceScore:
    """iLLaDA's confidence score of ``answer_ids`` (L,) after ``context_ids`` (P,) (see the
    module docstring); ``eos_id`` appends one EOS to every forward pass (``padd_eos``)."""
    mask_id = mask_id_of(model, mask_id)
    context = torch.as_tensor(context_ids, dtype=torch.long).reshape(-1)
    answer = torch.as_tensor(answer_ids, dtype=torch.long).reshape(-1)
    if len(answer) == 0:
        raise ValueError("An empty answer has no score: give at least one answer token.")
    if bool((answer == mask_id).any()) or bool((context == mask_id).any()):
        raise ValueError(
            f"The context or the answer contains the mask id {mask_id}: it would be read as a "
            "position to fill. Check the tokenizer's mask id against the model's."
        )
    device = model_device(model)
    P, L = len(context), len(answer)
    clean = torch.cat([context, answer]).to(device)  # (P + L,)
    x = torch.cat([context, torch.full((L,), mask_id)]).to(device)[None]  # (1, P + L)
    tail = None if eos_id is None else torch.full((1, 1), eos_id, device=device)
    order, losses = [], []
    for _ in range(L):
        inputs = x if tail is None else torch.cat([x, tail], dim=1)
        logits = upcast(model_logits(model, inputs))[0, : P + L]  # (P + L, V), EOS logit dropped
        masked = (x[0] == mask_id).nonzero().squeeze(1)  # still-masked positions
        ce = F.cross_entropy(logits[masked], clean[masked], reduction="none")  # (m,)
        best = int(torch.argmin(ce))  # the first of equal minima
        pos = int(masked[best])
        order.append(pos - P)
        losses.append(float(ce[best]))
        x[0, pos] = clean[pos]
    return ConfidenceScore(-sum(losses), order, losses)


def _check_ids(context: torch.Tensor, answers: list[torch.Tensor], mask_id: int) -> None:
    for k, answer in enumerate(answers):
        if len(answer) == 0:
            raise ValueError(f"Answer {k} is empty: give at least one token per answer.")
        if bool((answer == mask_id).any()):
            raise ValueError(
                f"Answer {k} contains the mask id {mask_id}: it would be read as a position to "
                "fill. Check the tokenizer's mask id against the model's."
            )
    if bool((context == mask_id).any()):
        raise ValueError(f"The context contains the mask id {mask_id}; check the tokenizer.")


@torch.no_grad()
def confidence_scores(
    model,
    context_ids: torch.Tensor,
    answers: list[torch.Tensor],
    mask_id: int | None = None,
    eos_id: int | None = None,
) -> list[ConfidenceScore]:
    """``confidence_score`` of every answer in ``answers`` after ``context_ids``, the answers
    batched: one forward pass per step for all answers not yet revealed (see the module
    docstring). Equal to scoring each answer alone, up to float rounding."""
    mask_id = mask_id_of(model, mask_id)
    context = torch.as_tensor(context_ids, dtype=torch.long).reshape(-1)
    answers = [torch.as_tensor(a, dtype=torch.long).reshape(-1) for a in answers]
    if not answers:
        raise ValueError("No answers to score: pass at least one.")
    _check_ids(context, answers, mask_id)
    device = model_device(model)
    P, B = len(context), len(answers)
    lengths = [len(a) for a in answers]
    tail = 0 if eos_id is None else 1
    N = P + max(lengths) + tail  # the longest row
    pad = [N - (P + L + tail) for L in lengths]  # left padding of each row
    # (B, N) rows: padding, context, masked answer, optional EOS; the clean answers beside them
    x = torch.full((B, N), mask_id, dtype=torch.long)
    clean = torch.full((B, N), -1, dtype=torch.long)
    keep = torch.ones((B, N), dtype=torch.long)
    for b, (answer, p) in enumerate(zip(answers, pad, strict=True)):
        keep[b, :p] = 0
        x[b, :p] = context[0] if P else 0  # any id: these keys are masked out
        x[b, p : p + P] = context
        clean[b, p + P : p + P + len(answer)] = answer
        if tail:
            x[b, -1] = eos_id
    x, clean, keep = x.to(device), clean.to(device), keep.to(device)
    positions = row_positions(keep)  # (B, N): each row numbered as if alone
    answer_at = clean >= 0  # (B, N) the answer positions
    order: list[list[int]] = [[] for _ in range(B)]
    losses: list[list[float]] = [[] for _ in range(B)]
    for step in range(max(lengths)):
        rows = [b for b in range(B) if step < lengths[b]]  # answers with masks left
        logits = upcast(model_logits(model, x[rows], keep[rows], positions[rows]))  # (b, N, V)
        for r, b in enumerate(rows):
            masked = ((x[b] == mask_id) & answer_at[b]).nonzero().squeeze(1)  # still masked
            ce = F.cross_entropy(logits[r, masked], clean[b, masked], reduction="none")  # (m,)
            best = int(torch.argmin(ce))  # the first of equal minima, as alone
            pos = int(masked[best])
            order[b].append(pos - pad[b] - P)
            losses[b].append(float(ce[best]))
            x[b, pos] = clean[b, pos]
    return [ConfidenceScore(-sum(ls), o, ls) for o, ls in zip(order, losses, strict=True)]
