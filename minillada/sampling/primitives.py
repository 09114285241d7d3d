"""The small pieces every reverse-process sampler is made of (lessons 1 and 2).

At every step the model proposes a token for every masked position (``gumbel_argmax``); a score
ranks those proposals (``minillada.sampling.remasking``), and the sampler *reveals* the best ones
(``positions_to_reveal``) and leaves the rest masked. How many it reveals at each step is a
schedule (``num_transfer_tokens``). LLaDA's code calls revealing a token "transferring" it
(``get_num_transfer_tokens``, ``transfer_index``); minillada says "reveal" everywhere and keeps the
official name only for ``num_transfer_tokens``, which restates that function.

Sampling happens in float64 by default: with float32 Gumbel noise the tail is cut off and the
temperature silently drops (Zheng et al. 2024, "Masked diffusion models are secretly time-agnostic
masked models and exploit inaccurate categorical sampling"); ``noise_dtype`` exists to show that.

Shapes: B = batch, L = sequence length, V = vocabulary, K = steps.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def gumbel_argmax_with_noise(
    logits: torch.Tensor, temperature: float, u: torch.Tensor
) -> torch.Tensor:
    """One Gumbel-max draw from softmax(logits / T) with given uniforms u:
    argmax(logits / T - log(-log u)), computed in u's dtype (float64 unless you ask otherwise);
    T = 0 is a plain argmax. logits, u: (..., V) -> ids (...)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    gumbel = -torch.log(-torch.log(u))
    return (logits.to(u.dtype) / temperature + gumbel).argmax(dim=-1)


def gumbel_argmax(
    logits: torch.Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    noise_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Sample from softmax(logits / temperature) by the Gumbel-max trick; temperature 0 is argmax.

    The uniforms are drawn in ``noise_dtype`` (float64: the exact sampler; float32: the flawed one
    lesson 3 measures). logits: (..., V) -> ids (...).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    # Draw the noise where the generator lives (the logits' device by default), so a GPU model does
    # not copy a (..., V) float64 array from the host at every step.
    noise_device = generator.device if generator is not None else logits.device
    u = torch.rand(logits.shape, generator=generator, dtype=noise_dtype, device=noise_device)
    u = u.to(logits.device).clamp_min(torch.finfo(noise_dtype).tiny)  # u = 0 would give -inf
    return gumbel_argmax_with_noise(logits, temperature, u)


def num_transfer_tokens(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """How many tokens to reveal at each of ``steps`` steps: as even as possible, the remainder on
    the first steps (LLaDA's get_num_transfer_tokens; 10 over 4 steps -> 3, 3, 2, 2).
    num_masked: (B,) -> (B, K)."""
    num_masked = torch.as_tensor(num_masked).reshape(-1)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    if (num_masked < steps).any():
        raise ValueError(
            f"steps={steps} is larger than the number of masked tokens ({int(num_masked.min())}); "
            f"every step must reveal at least one token, so use steps <= {int(num_masked.min())}."
        )
    base = num_masked[:, None] // steps  # (B, 1)
    remainder = num_masked[:, None] % steps
    return base + (torch.arange(steps, device=num_masked.device)[None, :] < remainder).long()


def positions_to_reveal(
    confidence: torch.Tensor,
    k: torch.Tensor | int | None = None,
    threshold: float | None = None,
) -> torch.Tensor:
    """Which positions to reveal this step: (B, L) float scores, -inf where a position is not a
    candidate (already revealed, or outside the current block) -> (B, L) bool.

    Fixed schedule (``threshold=None``): the ``k[b]`` highest scores of row b (LLaDA; ties broken
    by ``torch.topk`` as in the official code); ``k`` an int or (B,). Threshold mode (Fast-dLLM):
    every candidate with score >= ``threshold``, and always at least the single best candidate so
    every step makes progress.
    """
    B, L = confidence.shape
    if threshold is None and k is None:
        raise ValueError("Pass k (tokens to reveal per row) or threshold (a confidence level).")
    if threshold is None:
        k = torch.as_tensor(k).reshape(-1).expand(B)  # an int or (B,) -> (B,)
    reveal = torch.zeros(B, L, dtype=torch.bool, device=confidence.device)
    candidates = confidence > NEG_INF
    for b in range(B):
        n = int(candidates[b].sum())
        if threshold is None:
            kb = int(k[b])
            if kb > n:
                raise ValueError(
                    f"Row {b}: asked to reveal {kb} tokens but only {n} are candidates."
                )
            if kb > 0:
                reveal[b, confidence[b].topk(kb).indices] = True
        elif n > 0:
            reveal[b] = candidates[b] & (confidence[b] >= threshold)
            reveal[b, confidence[b].argmax()] = True
    return reveal
