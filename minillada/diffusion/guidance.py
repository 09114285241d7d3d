"""Calling a denoiser, and LLaDA's classifier-free guidance.

Shared by the sampler (lesson 2, ``minillada.sampling.generate``) and the likelihood estimators
(lesson 3, ``minillada.diffusion.likelihood``).

Shapes: B = batch, L = sequence length (prompt + answer), V = vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def model_logits(
    model: Callable, x: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Run a model of minillada's interface, ``model(ids, attention_mask=None) -> logits`` (see
    ``minillada.runtime``); it may also return an object with ``.logits`` (Hugging Face).
    ``attention_mask`` is passed as a keyword only when given. (B, L) -> (B, L, V)."""
    if attention_mask is None:
        out = model(x)
    else:
        try:
            out = model(x, attention_mask=attention_mask)
        except TypeError as err:
            if "attention_mask" not in str(err):
                raise
            raise ValueError(
                f"attention_mask was given but {type(model).__name__} does not take an "
                "attention_mask argument, so padded positions would be attended to anyway. "
                "Pass attention_mask=None to accept that, or wrap the model in a function "
                "f(ids, attention_mask=None) that uses it."
            ) from err
    return out if torch.is_tensor(out) else out.logits


def guided_logits(
    model: Callable,
    x: torch.Tensor,
    prompt_index: torch.Tensor,
    mask_id: int,
    cfg_scale: float,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits of the canvas, with unsupervised classifier-free guidance when ``cfg_scale`` = w > 0:
    un + (w + 1)(cond - un), where the unconditional copy has every prompt position masked (both
    passes run as one batch of 2B, as the official code does).

    x: (B, L); prompt_index: bool, (B, L) or (L,), True on prompt positions. Returns (B, L, V) in
    the model's dtype.
    """
    if cfg_scale <= 0:
        return model_logits(model, x, attention_mask)
    un_x = torch.where(prompt_index, mask_id, x)
    am = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
    logits = model_logits(model, torch.cat([x, un_x]), am)  # (2B, L, V)
    cond, un = logits.chunk(2, dim=0)
    return un + (cfg_scale + 1) * (cond - un)
