"""Supervised fine-tuning of a masked diffusion model, two ways (lesson 6).

* **LLaDA's recipe** (ML-GSAI/LLaDA GUIDELINES.md; LLaDA paper §2.3): each row is a prompt followed
  by its answer, the answers right-padded with EOS to the batch's longest row. The forward process
  masks the whole row, then the prompt is restored, so only answer positions (the EOS padding
  included, which the model learns to produce) are ever masked. Each masked token's cross-entropy
  is weighted by 1/p(t) and divided by its row's answer length (padding included); the rows are
  averaged. Learning to fill a fixed canvas with EOS is how LLaDA "stops", which is why it needs a
  fixed ``gen_length``.
* **iLLaDA's variable-length recipe**, as the paper reports it: every example is
  ``prompt + response + one EOS``, the examples are packed back to back into fixed windows (no
  padding), and each window is masked exactly as in pre-training (the prompt is not protected).
  The model learns that one EOS ends an answer, which lets it generate block after block until it
  writes one (``minillada.sampling.variable_length.var_generate``). The paper states the format and
  that
  SFT was "modified for variable-length generation"; the packing and the unprotected prompt are our
  reading of it, not published code.

Shapes: B = batch, L = row or window length, P = prompt length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from minillada.diffusion.guidance import model_logits
from minillada.diffusion.masking import EPS, apply_mask, mask_probability, sample_times
from minillada.diffusion.objectives import masked_diffusion_loss
from minillada.runtime import model_device, upcast


def _ids(seq: Sequence[int] | torch.Tensor, what: str, k: int) -> torch.Tensor:
    ids = torch.as_tensor(seq, dtype=torch.long).reshape(-1)
    if what == "answer" and len(ids) == 0:
        raise ValueError(f"Example {k} has an empty answer: there is nothing to learn from it.")
    return ids


def pad_sft_batch(
    prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], eos_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaDA's SFT rows: prompt + answer, right-padded with EOS to the longest row.
    Returns (ids (B, L), prompt_lengths (B,))."""
    if len(prompts) != len(answers) or not prompts:
        raise ValueError(
            f"Expected as many prompts as answers (and at least one), got {len(prompts)} prompts "
            f"and {len(answers)} answers."
        )
    pairs = [
        (_ids(p, "prompt", k), _ids(a, "answer", k))
        for k, (p, a) in enumerate(zip(prompts, answers, strict=True))
    ]
    L = max(len(p) + len(a) for p, a in pairs)
    ids = torch.full((len(pairs), L), eos_id, dtype=torch.long)  # (B, L): EOS padding = answer
    for b, (p, a) in enumerate(pairs):
        ids[b, : len(p) + len(a)] = torch.cat([p, a])
    return ids, torch.tensor([len(p) for p, _ in pairs])


def llada_sft_loss_from_noise(
    model,
    ids: torch.Tensor,
    prompt_lengths: torch.Tensor,
    t: torch.Tensor,
    u: torch.Tensor,
    mask_id: int,
    eps: float = EPS,
) -> torch.Tensor:
    """LLaDA's SFT loss with given times t (B,) and noise u (B, L): mask with p(t), restore the
    prompt, sum CE / p over masked positions divided by each row's answer length, mean over rows."""
    B, L = ids.shape
    xt, masked = apply_mask(ids, t, u, mask_id, eps)  # (B, L) each
    is_prompt = torch.arange(L, device=ids.device)[None, :] < prompt_lengths.to(ids.device)[:, None]
    xt = torch.where(is_prompt, ids, xt)  # the prompt is never masked
    masked = masked & ~is_prompt
    answer_lengths = (L - prompt_lengths.to(ids.device)).to(torch.float64)  # (B,), padding included
    logits = upcast(model_logits(model, xt))  # (B, L, V)
    ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")  # (B, L)
    p = mask_probability(t.to(logits.dtype), eps)[:, None]  # (B, 1)
    per_row = (ce * masked / p).sum(dim=1) / answer_lengths.to(logits.dtype)  # (B,)
    return per_row.mean()


def llada_sft_loss(
    model,
    ids: torch.Tensor,
    prompt_lengths: torch.Tensor,
    mask_id: int,
    generator: torch.Generator | None = None,
    eps: float = EPS,
) -> torch.Tensor:
    """``llada_sft_loss_from_noise`` with t ~ U(0, 1) per row and uniform noise from
    ``generator`` (as GUIDELINES.md draws them)."""
    B, L = ids.shape
    t = sample_times(B, generator=generator).to(model_device(model))
    u = torch.rand((B, L), generator=generator).to(model_device(model))
    return llada_sft_loss_from_noise(model, ids.to(t.device), prompt_lengths, t, u, mask_id, eps)


def pack_examples(
    prompts: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    eos_id: int,
    window: int,
) -> torch.Tensor:
    """iLLaDA's variable-length SFT data: every example ``prompt + answer + EOS`` written back to
    back into one stream and cut into windows of ``window`` tokens (the tail shorter than a window
    is dropped). Returns (N, window)."""
    if len(prompts) != len(answers) or not prompts:
        raise ValueError(
            f"Expected as many prompts as answers (and at least one), got {len(prompts)} prompts "
            f"and {len(answers)} answers."
        )
    stream = torch.cat(
        [
            torch.cat([_ids(p, "prompt", k), _ids(a, "answer", k), torch.tensor([eos_id])])
            for k, (p, a) in enumerate(zip(prompts, answers, strict=True))
        ]
    )
    n = len(stream) // window
    if n == 0:
        raise ValueError(
            f"The examples hold {len(stream)} tokens in all, less than one window of {window}; "
            "use a shorter window or more examples."
        )
    return stream[: n * window].view(n, window)  # (N, window)


def variable_length_sft_loss(
    model,
    windows: torch.Tensor,
    mask_id: int,
    generator: torch.Generator | None = None,
    eps: float = EPS,
) -> torch.Tensor:
    """iLLaDA's SFT loss on packed windows (B, L): the pre-training loss itself, stratified t."""
    B, L = windows.shape
    t = sample_times(B, stratified=True, generator=generator).to(windows.device)
    u = torch.rand((B, L), generator=generator).to(windows.device)
    xt, masked = apply_mask(windows, t, u, mask_id, eps)
    logits = model_logits(model, xt)  # (B, L, V)
    return masked_diffusion_loss(logits, windows, masked, mask_probability(t, eps))


# --------------------------------------------------------------------------------------------------
# The two recipes as steps of the course's one training loop (minillada.training.loop.train)
# --------------------------------------------------------------------------------------------------


def llada_sft_batches(
    prompts: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    eos_id: int,
    batch_size: int,
):
    """``get_batch(generator)`` for LLaDA's recipe: ``batch_size`` examples drawn at random, padded
    with EOS to the longest of them (``pad_sft_batch``). Returns (ids (B, L), prompt_lengths)."""

    def get_batch(generator: torch.Generator):
        rows = torch.randint(len(prompts), (batch_size,), generator=generator).tolist()
        return pad_sft_batch([prompts[r] for r in rows], [answers[r] for r in rows], eos_id)

    return get_batch


def packed_batches(windows: torch.Tensor, batch_size: int):
    """``get_batch(generator)`` for iLLaDA's recipe: ``batch_size`` packed windows at random."""

    def get_batch(generator: torch.Generator) -> torch.Tensor:
        return windows[torch.randint(len(windows), (batch_size,), generator=generator)]

    return get_batch


def llada_sft_loss_fn(mask_id: int, eps: float = EPS):
    """``loss_fn(model, batch, generator)`` of LLaDA's recipe for ``train``."""

    def loss_fn(model, batch, generator):
        ids, prompt_lengths = batch
        return llada_sft_loss(model, ids, prompt_lengths, mask_id, generator, eps)

    return loss_fn


def variable_length_sft_loss_fn(mask_id: int, eps: float = EPS):
    """``loss_fn(model, batch, generator)`` of iLLaDA's recipe for ``train``."""

    def loss_fn(model, windows, generator):
        return variable_length_sft_loss(model, windows, mask_id, generator, eps)

    return loss_fn
