"""Lesson 1's first sampler: start from a fully masked canvas and reveal tokens over K steps.

At every step the model predicts a token for every masked position; a sampler then decides which of
those predictions to commit ("reveal") and leaves the rest masked. Two orders:
  * "random": commit a random subset (the ancestral reverse process of the linear schedule);
  * "confidence": commit the positions whose sampled token has the highest probability
    (LLaDA's "low_confidence" remasking: the least confident predictions are masked again).
Revealed tokens are never changed. Sampling happens in float64 (Zheng et al. 2024: float32 Gumbel
noise truncates the tail and silently lowers the temperature).

Shapes: B = batch, L = sequence length, V = vocabulary, K = steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def gumbel_argmax(
    logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sample from softmax(logits / temperature) by the Gumbel-max trick in float64; temperature 0
    is argmax. logits: (..., V) -> ids (...)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    # Draw the noise where the generator lives (the logits' device by default), so a GPU model does
    # not copy a (..., V) float64 array from the host at every step.
    noise_device = generator.device if generator is not None else logits.device
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float64, device=noise_device)
    u = u.to(logits.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))  # clamp: u = 0 would give -inf
    return (logits.double() / temperature + gumbel).argmax(dim=-1)


def num_transfer_tokens(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """How many tokens to reveal at each of ``steps`` steps: as even as possible, the remainder on
    the first steps (LLaDA's get_num_transfer_tokens; 10 over 4 steps -> 3, 3, 2, 2). num_masked:
    (B,) -> (B, K)."""
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


def reveal_most_confident(
    x: torch.Tensor,
    candidates: torch.Tensor,
    confidence: torch.Tensor,
    k: torch.Tensor | int,
    mask_id: int,
) -> torch.Tensor:
    """Commit, in every row, the ``k`` masked positions with the highest confidence.

    x, candidates: (B, L) ids; confidence: (B, L); k: int or (B,). Returns a new x. Positions that
    are already revealed are never candidates.
    """
    B = x.shape[0]
    k = torch.as_tensor(k).expand(B) if torch.as_tensor(k).dim() == 0 else torch.as_tensor(k)
    masked = x == mask_id
    confidence = torch.where(
        masked, confidence.double(), torch.tensor(float("-inf"), dtype=torch.float64)
    )
    x = x.clone()
    for b in range(B):
        kb = int(k[b])
        if kb > int(masked[b].sum()):
            raise ValueError(
                f"Row {b}: asked to reveal {kb} tokens but only {int(masked[b].sum())} are masked."
            )
        if kb == 0:
            continue
        positions = confidence[b].topk(kb).indices
        x[b, positions] = candidates[b, positions]
    return x


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (B, L) final ids, no masks left
    steps: list[int] = field(
        default_factory=list
    )  # step numbers at which ``canvases`` were recorded
    canvases: list[torch.Tensor] = field(default_factory=list)  # (B, L) ids, masks included


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    mask_id: int,
    length: int,
    steps: int,
    num_samples: int = 1,
    order: str = "random",
    temperature: float = 1.0,
    prompt: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    record: bool = False,
) -> SampleResult:
    """Generate ``num_samples`` sequences of ``length`` tokens in ``steps`` reveal steps.

    ``prompt`` (P,) ids, optional, is kept fixed in front of the generated part; the model sees
    prompt + generation, which must fit its context.
    """
    if order not in ("random", "confidence"):
        raise ValueError(f"order must be 'random' or 'confidence', got {order!r}.")
    device = next(model.parameters()).device
    prompt = (
        torch.empty(0, dtype=torch.long) if prompt is None else torch.as_tensor(prompt).reshape(-1)
    )
    P = len(prompt)
    context = getattr(getattr(model, "config", None), "block_size", None)
    if context is not None and P + length > context:
        raise ValueError(
            f"prompt ({P} tokens) + length ({length}) = {P + length} exceeds the model's context "
            f"of "
            f"{context} tokens; shorten the prompt or the generation."
        )
    x = torch.full((num_samples, P + length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    x = x.to(device)
    schedule = num_transfer_tokens(torch.full((num_samples,), length), steps)  # (B, K)
    result = SampleResult(tokens=x)
    if record:
        result.steps.append(0)
        result.canvases.append(x.cpu().clone())
    for step in range(steps):
        logits = model(x).double()  # (B, L, V)
        logits[..., mask_id] = float("-inf")  # the mask is never a prediction of a clean token
        candidates = gumbel_argmax(logits, temperature, generator)  # (B, L)
        if order == "confidence":
            probs = logits.softmax(dim=-1)
            confidence = probs.gather(-1, candidates[..., None]).squeeze(-1)  # (B, L)
        else:
            confidence = torch.rand(x.shape, generator=generator, dtype=torch.float64).to(device)
        x = reveal_most_confident(x, candidates, confidence, schedule[:, step].to(device), mask_id)
        if record:
            result.steps.append(step + 1)
            result.canvases.append(x.cpu().clone())
    result.tokens = x.cpu()
    return result
