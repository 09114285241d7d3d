"""The reverse process, once for every lesson: LLaDA's sampler (the official ``generate.py`` of
ML-GSAI/LLaDA), infilling, and lesson 1's first sampler as a preset of the same loop.

``generate`` appends ``gen_length`` mask tokens to the prompt and reveals them over ``steps`` steps:

1. The generation is cut into ``gen_length / block_length`` blocks decoded left to right
   ("semi-autoregressive"); the steps are split evenly over the blocks, and inside a block the
   number of tokens revealed per step is as even as possible, the remainder on the first steps.
2. Every step runs the model on the whole canvas, proposes a token x0 for every position (argmax at
   temperature 0; Gumbel-max in float64 otherwise), scores the proposals at masked positions of the
   current block (``minillada.sampling.remasking``), and reveals the best ones. Positions right of
   the current block are never revealed; revealed tokens never change.
3. Classifier-free guidance (``cfg_scale`` = w > 0) runs a second, unconditional pass in which every
   prompt position is replaced by the mask token, and uses un + (w + 1)(cond - un).

``infill`` fills mask tokens that sit anywhere in a given sequence (e.g. the middle of a passage)
with the same step; ``sample`` is lesson 1's sampler: one block, the mask never proposed, order
"random" or "confidence". All three build a ``SamplerConfig`` (how to denoise) and run one loop,
``denoise``. Every special id (mask, pad, EOS, end-of-turn) is an argument: nothing is hard-coded,
so the same loop drives lesson 1's character model and the 8B LLaDA model.

Shapes: B = batch, P = prompt length, G = gen_length, L = P + G, V = vocabulary, W = block window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from minillada.models.attention import row_positions
from minillada.runtime import context_length, mask_id_of, model_device
from minillada.sampling.denoise import (
    SamplerConfig,
    TokenIds,
    as_batch,
    check_canvas,
    denoise,
    model_eos,
)
from minillada.sampling.traces import Trace


@torch.no_grad()
def generate(
    model: Callable,
    prompt_ids: torch.Tensor,
    gen_length: int,
    block_length: int,
    steps: int | None,
    mask_id: int | None = None,
    *,
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
    cache: str | None = None,
    cache_refresh: int | None = None,
    noise_dtype: torch.dtype = torch.float64,
    max_length: int | None = None,
    generator: torch.Generator | None = None,
    trace: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Trace]:
    """LLaDA's sampler (ML-GSAI/LLaDA's generate.py): prompt (P,) or (B, P), left-padded,
    + gen_length masks. Returns the canvas (B, P + G), prompt included.

    steps: total reverse steps over all blocks (ignored, may be None, when ``threshold`` is set:
    then each block runs until it has no mask left, revealing every candidate scoring >= threshold,
    at least one per step). attention_mask: (B, P), 1 = real token, 0 = left padding; a padded
    row's positions count from its first real token, so at temperature 0 every row of a batch gets
    the tokens it gets alone (the rows share the steps: with a threshold a finished row waits,
    without passes, until the others finish the block).
    logits_mask_inf: never propose the mask token itself (off by default, as in the official code).
    cache: "prefix" or "dual" (Fast-dLLM's approximate caches, lesson 8), refreshed at each block
    and every ``cache_refresh`` steps. The other options are SamplerConfig's fields. With
    ``trace=True`` returns (tokens, Trace). mask_id and eos_id default to the model config's
    (``minillada.runtime.mask_id_of``).
    """
    mask_id = mask_id_of(model, mask_id)
    eos_id = model_eos(model, eos_id)
    prompt = as_batch(prompt_ids, "prompt_ids")
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
    per_block = None if threshold is not None else steps // num_blocks
    config = SamplerConfig(
        steps=per_block,
        temperature=temperature,
        remasking=remasking,
        cfg_scale=cfg_scale,
        threshold=threshold,
        logits_eos_inf=logits_eos_inf,
        confidence_eos_eot_inf=confidence_eos_eot_inf,
        logits_mask_inf=logits_mask_inf,
        noise_dtype=noise_dtype,
        cache=cache,
        cache_refresh=cache_refresh,
    )
    if (prompt == mask_id).any():
        raise ValueError(
            f"prompt_ids contain the mask id {mask_id}; generate() only fills the positions it "
            "appends. To fill masks inside a passage use minillada.sampling.generate.infill."
        )
    if attention_mask is not None:
        attention_mask = as_batch(attention_mask, "attention_mask")
        if attention_mask.shape != prompt.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, "
                f"expected the prompt's {(B, P)}."
            )
        if (attention_mask[:, 1:] < attention_mask[:, :-1]).any():
            raise ValueError(
                "attention_mask has a 0 after a 1: batched prompts must be padded on the LEFT, "
                "so that every row's generation starts right after its prompt."
            )
    x = torch.cat([prompt, torch.full((B, gen_length), mask_id, dtype=torch.long)], dim=1)  # (B, L)
    device = model_device(model)
    x = x.to(device)
    if attention_mask is not None:
        attention_mask = torch.cat(
            [attention_mask, torch.ones(B, gen_length, dtype=torch.long)], 1
        ).to(device)
    ids = TokenIds(mask=mask_id, eos=eos_id, eot=eot_id, pad=pad_id)
    check_canvas(model, x, config, ids, max_length)
    windows = [(P + b * block_length, P + (b + 1) * block_length) for b in range(num_blocks)]
    # Left-padded rows are numbered from their first real token, so each computes what it computes
    # alone (the official code numbers from the canvas start: equal up to RoPE's float rounding).
    positions = None if attention_mask is None else row_positions(attention_mask)
    x, rec = denoise(
        model,
        x,
        windows,
        config,
        ids,
        prompt_length=P,
        attention_mask=attention_mask,
        positions=positions,
        generator=generator,
        trace=trace,
    )
    return (x, rec) if trace else x


@torch.no_grad()
def infill(
    model: Callable,
    ids: torch.Tensor,
    steps: int | None,
    mask_id: int | None = None,
    *,
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
    noise_dtype: torch.dtype = torch.float64,
    max_length: int | None = None,
    generator: torch.Generator | None = None,
    trace: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Trace]:
    """Fill every mask token of ``ids`` (P,) or (B, P), wherever it sits, in ``steps`` steps (one
    block over the whole sequence; the unmasked tokens are the condition, also for guidance).
    Returns (B, P)."""
    mask_id = mask_id_of(model, mask_id)
    eos_id = model_eos(model, eos_id)
    x = as_batch(ids, "ids")
    n_masked = (x == mask_id).sum(dim=1)
    if (n_masked == 0).any():
        raise ValueError("Every row of ids needs at least one mask token to fill.")
    config = SamplerConfig(
        steps=None if threshold is not None else steps,
        temperature=temperature,
        remasking=remasking,
        cfg_scale=cfg_scale,
        threshold=threshold,
        logits_eos_inf=logits_eos_inf,
        confidence_eos_eot_inf=confidence_eos_eot_inf,
        logits_mask_inf=logits_mask_inf,
        noise_dtype=noise_dtype,
    )
    if threshold is None and steps is not None and steps > int(n_masked.min()):
        raise ValueError(
            f"steps={steps} exceeds the number of masks to fill "
            f"({int(n_masked.min())} in the row with fewest); "
            f"every step must reveal at least one token, so use steps <= {int(n_masked.min())}."
        )
    x = x.to(model_device(model))
    if attention_mask is not None:
        attention_mask = as_batch(attention_mask, "attention_mask").to(x.device)
    token_ids = TokenIds(mask=mask_id, eos=eos_id, eot=eot_id, pad=pad_id)
    check_canvas(model, x, config, token_ids, max_length)
    x, rec = denoise(
        model,
        x,
        [(0, x.shape[1])],
        config,
        token_ids,
        attention_mask=attention_mask,
        generator=generator,
        trace=trace,
    )
    return (x, rec) if trace else x


# Lesson 1's sampler, as a preset: one block over the whole generation, the mask token never
# proposed, and the two orders lesson 1 compares.
SAMPLE_ORDERS = {"random": "random", "confidence": "low_confidence"}


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (B, L) final ids, no masks left (prompt included)
    # step numbers at which ``canvases`` were recorded (0 = before the first step)
    steps: list[int] = field(default_factory=list)
    canvases: list[torch.Tensor] = field(default_factory=list)  # (B, L) ids, masks included


@torch.no_grad()
def sample(
    model: Callable,
    mask_id: int,
    length: int,
    steps: int,
    num_samples: int = 1,
    order: str = "random",
    temperature: float = 1.0,
    prompt: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    record: bool = False,
    noise_dtype: torch.dtype = torch.float64,
) -> SampleResult:
    """Lesson 1's sampler: ``num_samples`` sequences of ``length`` tokens in ``steps`` reveal
    steps, revealing a random subset (order "random": the ancestral reverse process) or the most
    confident proposals (order "confidence": LLaDA's low-confidence remasking) at each step.

    This is ``generate`` with one block (block_length = length) and ``logits_mask_inf=True``, at
    temperature 1 by default. ``prompt`` (P,) ids, optional, is kept fixed in front of the
    generated part; the model sees prompt + generation, which must fit its context.
    """
    if order not in SAMPLE_ORDERS:
        raise ValueError(f"order must be 'random' or 'confidence', got {order!r}.")
    prompt = (
        torch.empty(0, dtype=torch.long) if prompt is None else torch.as_tensor(prompt).reshape(-1)
    )
    context = context_length(model)
    if context is not None and len(prompt) + length > context:
        raise ValueError(
            f"prompt ({len(prompt)} tokens) + length ({length}) = {len(prompt) + length} exceeds "
            f"the model's context of {context} tokens; shorten the prompt or the generation."
        )
    out = generate(
        model,
        prompt.expand(num_samples, -1),
        length,
        length,
        steps,
        mask_id,
        temperature=temperature,
        remasking=SAMPLE_ORDERS[order],
        logits_mask_inf=True,
        noise_dtype=noise_dtype,
        generator=generator,
        trace=record,
    )
    if not record:
        return SampleResult(tokens=out.cpu())
    tokens, trace = out
    return SampleResult(tokens.cpu(), list(range(trace.num_steps + 1)), trace.canvases)
