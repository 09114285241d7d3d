"""Lesson 2: how a sampler chooses which predictions to reveal ("remasking" strategies).

At every reverse step the model proposes a token ``x0`` for every masked position. A *confidence
score* ranks those proposals; the sampler reveals the best ones and leaves (LLaDA says "remasks")
the others. This module holds the scores; ``minillada.sampling.primitives.positions_to_reveal``
picks the best ones and ``minillada.sampling.generate`` runs the loop.

Scores (higher = revealed earlier), all in float64:
  * ``low_confidence`` (LLaDA's name; alias ``top_prob``): p(x0), the probability of the
    proposed token under the un-noised logits (at temperature 0 x0 is the argmax, so this is
    the top probability);
  * ``margin``: p1 - p2, the gap between the two most likely tokens (Kim et al. 2025);
  * ``entropy``: sum_v p log p, the negative entropy (Dream's ``entropy`` order);
  * ``random``: U(0, 1), the order of the ancestral reverse process.

Shapes: B = batch, W = positions scored (a window of the sequence), L = sequence, V = vocabulary.
"""

from __future__ import annotations

import torch

STRATEGIES = ("low_confidence", "top_prob", "margin", "entropy", "random")


def token_probability(logits: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """p(x0) = softmax(logits)[x0] in float64 (LLaDA's low-confidence score).
    (B, W, V), (B, W) -> (B, W)."""
    p = logits.double().softmax(dim=-1)
    return p.gather(-1, x0[..., None]).squeeze(-1)


def margin_confidence(logits: torch.Tensor) -> torch.Tensor:
    """p1 - p2, the top probability minus the runner-up, in float64. (B, W, V) -> (B, W)."""
    top2 = logits.double().softmax(dim=-1).topk(2, dim=-1).values  # (B, W, 2)
    return top2[..., 0] - top2[..., 1]


def entropy_confidence(logits: torch.Tensor) -> torch.Tensor:
    """Negative entropy sum_v p log p (0 log 0 = 0), in float64: peaked predictions score high."""
    p = logits.double().softmax(dim=-1)
    return torch.xlogy(p, p).sum(dim=-1)


def confidence_scores(
    logits: torch.Tensor,
    x0: torch.Tensor,
    strategy: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The ``strategy``'s score of every proposal: logits (B, W, V), x0 (B, W) -> (B, W) float64."""
    if strategy in ("low_confidence", "top_prob"):
        return token_probability(logits, x0)
    if strategy == "margin":
        return margin_confidence(logits)
    if strategy == "entropy":
        return entropy_confidence(logits)
    if strategy == "random":
        u = torch.rand(x0.shape, generator=generator, dtype=torch.float64)
        return u.to(x0.device)
    raise ValueError(f"Unknown remasking strategy {strategy!r}; choose one of {STRATEGIES}.")
