"""Lesson 2: the reverse process with LLaDA's semantics (the official ``generate.py``, spec §5).

``generate`` appends ``gen_length`` mask tokens to the prompt and reveals them over ``steps`` steps:

1. The generation is cut into ``gen_length / block_length`` blocks decoded left to right
   ("semi-autoregressive"); the steps are split evenly over the blocks, and inside a block the
   number of tokens revealed per step is as even as possible, the remainder on the first steps.
2. Every step runs the model on the whole canvas, proposes a token x0 for every position (argmax at
   temperature 0; Gumbel-max in float64 otherwise), scores the proposals at masked positions of the
   current block (``minillada.remasking``), and commits the best ones. Positions right of the
   current block are never revealed; committed tokens never change.
3. Classifier-free guidance (``cfg_scale`` = w > 0) runs a second, unconditional pass in which every
   prompt position is replaced by the mask token, and uses un + (w + 1)(cond - un).

``infill`` fills mask tokens that sit anywhere in a given sequence (e.g. the middle of a passage)
with the same step. Every special id (mask, pad, EOS, end-of-turn) is an argument: nothing is
hard-coded, so the same function drives lesson 1's character model and the 8B LLaDA model.

Shapes: B = batch, P = prompt length, G = gen_length, L = P + G, V = vocabulary, W = block window.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from minillada.guidance import guided_logits
from minillada.remasking import STRATEGIES, confidence_scores, select_transfer
from minillada.sampling import gumbel_argmax, num_transfer_tokens
from minillada.traces import Trace

NEG_INF = float("-inf")


def gumbel_argmax_with_noise(
    logits: torch.Tensor, temperature: float, u: torch.Tensor
) -> torch.Tensor:
    """One Gumbel-max draw from softmax(logits / T) with given uniforms u:
    argmax(logits / T - log(-log u)) in float64 (T = 0: plain argmax). Same rule as
    ``minillada.sampling.gumbel_argmax``, with the noise passed in so a reader can check it by hand.
    logits, u: (..., V) -> ids (...)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    gumbel = -torch.log(-torch.log(u.double()))
    return (logits.double() / temperature + gumbel).argmax(dim=-1)


def low_confidence_step(
    x: torch.Tensor, logits: torch.Tensor, k: torch.Tensor | int, mask_id: int
) -> torch.Tensor:
    """One temperature-0 low-confidence step on a whole canvas: propose x0 = argmax, score it by its
    probability, commit the ``k`` most confident masked positions of each row. x (B, L), logits (B,
    L, V)."""
    x0 = logits.argmax(dim=-1)  # (B, L)
    p = confidence_scores(logits, x0, "low_confidence")  # (B, L)
    confidence = torch.where(x == mask_id, p, NEG_INF)
    k = (
        torch.as_tensor(k).expand(x.shape[0])
        if torch.as_tensor(k).dim() == 0
        else torch.as_tensor(k)
    )
    transfer = select_transfer(confidence, k)
    return torch.where(transfer, x0, x)


def accepts_attention_mask(model: Callable) -> bool:
    """Whether ``model(ids, attention_mask=...)`` is a valid call (a parameter of that name or
    **kwargs)."""
    fn = model.forward if isinstance(model, torch.nn.Module) else model
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.name == "attention_mask" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params
    )


def context_length(model: Callable, max_length: int | None = None) -> int | None:
    """The longest sequence the model accepts: ``max_length`` if given, else the model's config
    (block_size, max_sequence_length or max_position_embeddings), else None (unknown)."""
    if max_length is not None:
        return int(max_length)
    config = getattr(model, "config", None)
    for name in ("block_size", "max_sequence_length", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def _as_batch(ids: torch.Tensor, name: str) -> torch.Tensor:
    ids = torch.as_tensor(ids)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2:
        raise ValueError(f"{name} must be (P,) or (B, P) token ids, got shape {tuple(ids.shape)}.")
    return ids.long()


def _check_common(
    model: Callable,
    x: torch.Tensor,
    mask_id: int,
    temperature: float,
    remasking: str,
    cfg_scale: float,
    attention_mask: torch.Tensor | None,
    pad_id: int | None,
    eos_id: int | None,
    eot_id: int | None,
    logits_eos_inf: bool,
    confidence_eos_eot_inf: bool,
    threshold: float | None,
    max_length: int | None,
) -> None:
    if pad_id is not None and pad_id == mask_id:
        raise ValueError(
            f"pad_id == mask_id == {mask_id}: padding would be read as positions to generate. "
            "Pad with another id (LLaDA pads with EOS, 126081, and masks with 126336)."
        )
    if remasking not in STRATEGIES:
        raise ValueError(f"remasking={remasking!r} is not one of {STRATEGIES}.")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}.")
    if cfg_scale < 0:
        raise ValueError(f"cfg_scale must be >= 0 (0 = no guidance), got {cfg_scale}.")
    if (
        threshold is not None
        and not 0 < threshold <= 1
        and remasking in ("low_confidence", "top_prob")
    ):
        raise ValueError(
            f"threshold is a probability for {remasking!r}; "
            f"expected 0 < threshold <= 1, got {threshold}."
        )
    if logits_eos_inf and eos_id is None:
        raise ValueError("logits_eos_inf=True needs eos_id (the end-of-sequence token id).")
    if confidence_eos_eot_inf and eos_id is None and eot_id is None:
        raise ValueError("confidence_eos_eot_inf=True needs eos_id and/or eot_id.")
    context = context_length(model, max_length)
    if context is not None and x.shape[1] > context:
        raise ValueError(
            f"The canvas has {x.shape[1]} positions but the model's context is {context} tokens; "
            f"shorten the prompt or gen_length (or pass max_length if the model can take more)."
        )
    if attention_mask is not None:
        if not accepts_attention_mask(model):
            raise ValueError(
                f"attention_mask was given but {type(model).__name__} does not take an "
                "attention_mask argument, so padded positions would be attended to anyway. "
                "Pass attention_mask=None to accept that, or wrap the model in a function "
                "f(ids, attention_mask=None) that uses it."
            )


def _denoise(
    model: Callable,
    x: torch.Tensor,
    windows: list[tuple[int, int]],
    steps_per_window: int | None,
    mask_id: int,
    prompt_length: int,
    temperature: float,
    remasking: str,
    cfg_scale: float,
    attention_mask: torch.Tensor | None,
    eos_id: int | None,
    eot_id: int | None,
    logits_eos_inf: bool,
    confidence_eos_eot_inf: bool,
    logits_mask_inf: bool,
    threshold: float | None,
    generator: torch.Generator | None,
    trace: bool,
) -> tuple[torch.Tensor, Trace | None]:
    """The shared reverse loop: reveal the masks of each window (left to right) in turn."""
    B, L = x.shape
    prompt_index = x != mask_id  # fixed once, as in the official code: pads count as prompt
    suppressed = [i for i in (eos_id, eot_id) if i is not None] if confidence_eos_eot_inf else []
    rec = Trace(prompt_length, mask_id, canvases=[x.cpu().clone()]) if trace else None
    for w, (start, end) in enumerate(windows):
        masked_count = (x[:, start:end] == mask_id).sum(dim=1)  # (B,)
        schedule = (
            None if threshold is not None else num_transfer_tokens(masked_count, steps_per_window)
        )
        step = 0
        while (x[:, start:end] == mask_id).any():
            if schedule is not None and step == schedule.shape[1]:
                break
            logits = guided_logits(model, x, prompt_index, mask_id, cfg_scale, attention_mask)
            # Only the window can hold candidates: left of it nothing is masked, right of it the
            # official code sets the confidence to -inf. Work in float64 from here on.
            win = logits[:, start:end].to(torch.float64, copy=True)  # (B, W, V), a fresh copy
            if logits_mask_inf:
                win[..., mask_id] = NEG_INF
            if logits_eos_inf:
                win[..., eos_id] = NEG_INF  # EOS can never be proposed (official flag)
            x0 = gumbel_argmax(win, temperature, generator)  # (B, W); argmax at temperature 0
            if suppressed:
                # Score the proposals as if EOS and EoT did not exist: a position whose proposal is
                # one of them gets probability 0, i.e. it is revealed last. The official generate.py
                # means to do this with a chained assignment `a[..., eos] = b[..., eot] = -inf`,
                # which really sets EOS in the noisy copy and EoT in the clean logits, so at
                # temperature > 0 EOS is never suppressed (ML-GSAI/LLaDA issue #137, PR #139). We
                # deliberately do not reproduce that bug: both are suppressed at any temperature.
                win = win.clone()
                win[..., suppressed] = NEG_INF
            conf = confidence_scores(win, x0, remasking, generator)  # (B, W) float64
            if suppressed and remasking not in ("low_confidence", "top_prob"):
                lowest = torch.finfo(torch.float64).min  # below every real score, above -inf
                conf = torch.where(
                    torch.isin(x0, torch.tensor(suppressed, device=x0.device)), lowest, conf
                )
            masked = x[:, start:end] == mask_id
            confidence = torch.full((B, L), NEG_INF, dtype=torch.float64, device=x.device)
            confidence[:, start:end] = torch.where(masked, conf, NEG_INF)
            k = None if schedule is None else schedule[:, step]
            transfer = select_transfer(confidence, k, threshold)  # (B, L) bool
            if threshold is not None and (x0[transfer[:, start:end]] == mask_id).all():
                raise RuntimeError(
                    "The model proposed the mask token itself at every position chosen this step, "
                    "so threshold decoding cannot make progress. Pass logits_mask_inf=True."
                )
            x = x.clone()
            x[:, start:end] = torch.where(transfer[:, start:end], x0, x[:, start:end])
            if rec is not None:
                rec.canvases.append(x.cpu().clone())
                rec.revealed.append(transfer.cpu())
                rec.confidence.append(confidence.cpu())
                rec.blocks.append(w)
            step += 1
    return x, rec


@torch.no_grad()
def generate(
    model: Callable,
    prompt_ids: torch.Tensor,
    gen_length: int,
    block_length: int,
    steps: int | None,
    mask_id: int,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 0.0,
    attention_mask: torch.Tensor | None = None,
    pad_id: int | None = None,
    eos_id: int | None = None,
    eot_id: int | None = None,
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool = False,
    logits_mask_inf: bool = False,
    threshold: float | None = None,
    max_length: int | None = None,
    generator: torch.Generator | None = None,
    trace: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Trace]:
    """LLaDA's sampler (spec §5): prompt (P,) or (B, P), left-padded, + gen_length masks.

    Returns the canvas (B, P + G), prompt included.

    steps: total reverse steps over all blocks (ignored, may be None, when ``threshold`` is set:
    then each block runs until it has no mask left, revealing every candidate scoring >= threshold,
    at least one per step). attention_mask: (B, P), 1 = real token, 0 = left padding.
    logits_mask_inf: never propose the mask token itself (off by default, as in the official code).
    With ``trace=True`` returns (tokens, Trace).
    """
    prompt = _as_batch(prompt_ids, "prompt_ids")
    B, P = prompt.shape
    if gen_length < 1 or block_length < 1:
        raise ValueError(
            f"gen_length and block_length must be >= 1, got {gen_length} and {block_length}."
        )
    if gen_length % block_length:
        raise ValueError(
            f"gen_length={gen_length} is not divisible by block_length={block_length}: the "
            f"generation is cut into equal blocks. Use a block_length that divides {gen_length} "
            "(or block_length=gen_length for pure diffusion)."
        )
    num_blocks = gen_length // block_length
    if threshold is None:
        if steps is None or steps < 1:
            raise ValueError(
                f"steps must be a positive int (None only with threshold=...), got {steps}."
            )
        if steps % num_blocks:
            raise ValueError(
                f"steps={steps} is not divisible by the number of blocks "
                f"({gen_length} / {block_length} = {num_blocks}): every block gets the same "
                f"number of steps. Use a multiple of {num_blocks}."
            )
        if steps // num_blocks > block_length:
            raise ValueError(
                f"steps={steps} gives {steps // num_blocks} steps per block, more than the "
                f"{block_length} masked tokens in a block; every step must reveal at least one "
                f"token, so use steps <= {num_blocks * block_length}."
            )
    if (prompt == mask_id).any():
        raise ValueError(
            f"prompt_ids contain the mask id {mask_id}; generate() only fills the positions it "
            "appends. To fill masks inside a passage use minillada.generate.infill."
        )
    if attention_mask is not None:
        attention_mask = _as_batch(attention_mask, "attention_mask")
        if attention_mask.shape != prompt.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected the prompt's "
                f"{(B, P)}."
            )
        if (attention_mask[:, 1:] < attention_mask[:, :-1]).any():
            raise ValueError(
                "attention_mask has a 0 after a 1: batched prompts must be padded on the LEFT, "
                "so that every row's generation starts right after its prompt."
            )
    x = torch.cat([prompt, torch.full((B, gen_length), mask_id, dtype=torch.long)], dim=1)  # (B, L)
    device = _model_device(model)
    x = x.to(device)
    if attention_mask is not None:
        attention_mask = torch.cat(
            [attention_mask, torch.ones(B, gen_length, dtype=torch.long)], 1
        ).to(device)
    _check_common(
        model,
        x,
        mask_id,
        temperature,
        remasking,
        cfg_scale,
        attention_mask,
        pad_id,
        eos_id,
        eot_id,
        logits_eos_inf,
        confidence_eos_eot_inf,
        threshold,
        max_length,
    )
    windows = [(P + b * block_length, P + (b + 1) * block_length) for b in range(num_blocks)]
    per_block = None if threshold is not None else steps // num_blocks
    x, rec = _denoise(
        model,
        x,
        windows,
        per_block,
        mask_id,
        P,
        temperature,
        remasking,
        cfg_scale,
        attention_mask,
        eos_id,
        eot_id,
        logits_eos_inf,
        confidence_eos_eot_inf,
        logits_mask_inf,
        threshold,
        generator,
        trace,
    )
    return (x, rec) if trace else x


@torch.no_grad()
def infill(
    model: Callable,
    ids: torch.Tensor,
    steps: int | None,
    mask_id: int,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 0.0,
    attention_mask: torch.Tensor | None = None,
    pad_id: int | None = None,
    eos_id: int | None = None,
    eot_id: int | None = None,
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool = False,
    logits_mask_inf: bool = False,
    threshold: float | None = None,
    max_length: int | None = None,
    generator: torch.Generator | None = None,
    trace: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Trace]:
    """Fill every mask token of ``ids`` (P,) or (B, P), wherever it sits, in ``steps`` steps (one
    block over the whole sequence; the unmasked tokens are the condition, also for guidance).
    Returns (B, P)."""
    x = _as_batch(ids, "ids")
    n_masked = (x == mask_id).sum(dim=1)
    if (n_masked == 0).any():
        raise ValueError("Every row of ids needs at least one mask token to fill.")
    if threshold is None:
        if steps is None or steps < 1:
            raise ValueError(
                f"steps must be a positive int (None only with threshold=...), got {steps}."
            )
        if steps > int(n_masked.min()):
            raise ValueError(
                f"steps={steps} exceeds the number of masks to fill ({int(n_masked.min())} in "
                "the row with fewest); every step must reveal at least one token, so use "
                f"steps <= {int(n_masked.min())}."
            )
    x = x.to(_model_device(model))
    if attention_mask is not None:
        attention_mask = _as_batch(attention_mask, "attention_mask").to(x.device)
    _check_common(
        model,
        x,
        mask_id,
        temperature,
        remasking,
        cfg_scale,
        attention_mask,
        pad_id,
        eos_id,
        eot_id,
        logits_eos_inf,
        confidence_eos_eot_inf,
        threshold,
        max_length,
    )
    x, rec = _denoise(
        model,
        x,
        [(0, x.shape[1])],
        steps,
        mask_id,
        0,
        temperature,
        remasking,
        cfg_scale,
        attention_mask,
        eos_id,
        eot_id,
        logits_eos_inf,
        confidence_eos_eot_inf,
        logits_mask_inf,
        threshold,
        generator,
        trace,
    )
    return (x, rec) if trace else x


def _model_device(model: Callable) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")
