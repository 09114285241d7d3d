"""Calling a denoiser, and LLaDA's classifier-free guidance.

Shared by the sampler (lesson 2, ``minillada.sampling.generate``) and the likelihood estimators
(lesson 3, ``minillada.diffusion.likelihood``).

Shapes: B = batch, L = sequence length (prompt + answer), V = vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def takes_positions(model: Callable) -> bool:
    """Whether ``model`` takes ``positions=`` (minillada's LLaDAModel does)."""
    return bool(getattr(model, "supports_positions", False))


def cuts_logits(model: Callable) -> bool:
    """Whether ``model`` takes ``logits_from=`` (minillada's LLaDAModel does)."""
    return bool(getattr(model, "supports_logits_from", False))


def model_logits(
    model: Callable,
    x: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    logits_from: int | None = None,
    **cache_args,
) -> torch.Tensor:
    """Run a model of minillada's interface, ``model(ids, attention_mask=None) -> logits`` (see
    ``minillada.runtime``); it may also return an object with ``.logits`` (Hugging Face).
    ``attention_mask`` is passed as a keyword only when given. ``positions`` (B, L), each row's
    RoPE positions, is passed to a model that ``takes_positions``; any other model numbers them
    from the canvas start, as the official code does (RoPE is relative, so a left-padded row then
    differs from its unpadded self only by float rounding). ``logits_from``: only the logits of
    positions logits_from .. L are needed, which a model that ``cuts_logits`` then computes alone;
    the caller checks ``cuts_logits`` to know which it got. ``cache_args`` (``cache=``,
    ``start=``) go to the model as they are (lesson 8's caches). (B, L) -> (B, L, V)."""
    extra = dict(cache_args)
    if positions is not None and takes_positions(model):
        extra["positions"] = positions
    if logits_from is not None and cuts_logits(model):
        extra["logits_from"] = logits_from
    if attention_mask is None:
        out = model(x, **extra)
    else:
        try:
            out = model(x, attention_mask=attention_mask, **extra)
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
    positions: torch.Tensor | None = None,
    logits_from: int | None = None,
) -> torch.Tensor:
    """Logits of the canvas, with unsupervised classifier-free guidance when ``cfg_scale`` = w > 0:
    un + (w + 1)(cond - un), where the unconditional copy has every prompt position masked (both
    passes run as one batch of 2B, as the official code does).

    x: (B, L); prompt_index: bool, (B, L) or (L,), True on prompt positions. Returns (B, L, V) in
    the model's dtype.
    """
    if cfg_scale <= 0:
        return model_logits(model, x, attention_mask, positions, logits_from)
    un_x = torch.where(prompt_index, mask_id, x)
    am = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
    both = None if positions is None else torch.cat([positions, positions])
    logits = model_logits(model, torch.cat([x, un_x]), am, both, logits_from)  # (2B, L, V)
    cond, un = logits.chunk(2, dim=0)
    return un + (cfg_scale + 1) * (cond - un)
