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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from minillada.diffusion.guidance import guided_logits
from minillada.models.kv_cache import KVCache
from minillada.runtime import context_length, mask_id_of, model_device
from minillada.sampling.primitives import (
    NEG_INF,
    gumbel_argmax,
    num_transfer_tokens,
    positions_to_reveal,
)
from minillada.sampling.remasking import STRATEGIES, confidence_scores
from minillada.sampling.traces import Trace


@dataclass(frozen=True)
class SamplerConfig:
    """How to run the reverse process: everything but the model, the canvas and the token ids."""

    steps: int | None = None  # reverse steps per window; None only with threshold
    temperature: float = 0.0  # 0 = greedy (argmax); > 0 samples by Gumbel-max
    remasking: str = "low_confidence"  # the confidence score (minillada.sampling.remasking)
    cfg_scale: float = 0.0  # classifier-free guidance weight w; 0 = off
    threshold: float | None = None  # reveal every proposal scoring >= threshold (Fast-dLLM)
    logits_eos_inf: bool = False  # EOS can never be proposed (official flag)
    confidence_eos_eot_inf: bool = False  # EOS / EoT proposals are revealed last (official flag)
    logits_mask_inf: bool = False  # never propose the mask token itself
    noise_dtype: torch.dtype = torch.float64  # dtype of the Gumbel uniforms (float64 is exact)
    cache: str | None = None  # approximate keys/values (lesson 8): None, "prefix" or "dual"
    cache_refresh: int | None = None  # also refresh the cache every k steps of a window

    def __post_init__(self) -> None:
        if self.cache not in CACHES:
            raise ValueError(
                f"cache={self.cache!r} is not one of {CACHES}: None (recompute everything), "
                "'prefix' (reuse the positions before the block) or 'dual' (before and after it)."
            )
        if self.cache is not None and self.cfg_scale > 0:
            raise ValueError(
                f"cache={self.cache!r} cannot be combined with classifier-free guidance "
                f"(cfg_scale={self.cfg_scale}): the unconditional pass would need a cache of its "
                "own. Use cfg_scale=0 with a cache, or no cache with guidance."
            )
        if self.cache_refresh is not None and (self.cache is None or self.cache_refresh < 1):
            raise ValueError(
                f"cache_refresh={self.cache_refresh} needs a cache and a positive number of steps."
            )
        if self.remasking not in STRATEGIES:
            raise ValueError(f"remasking={self.remasking!r} is not one of {STRATEGIES}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}.")
        if self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0 (0 = no guidance), got {self.cfg_scale}.")
        if self.threshold is None and (self.steps is None or self.steps < 1):
            raise ValueError(
                f"steps must be a positive int (None only with threshold=...), got {self.steps}."
            )
        if (
            self.threshold is not None
            and not 0 < self.threshold <= 1
            and self.remasking in ("low_confidence", "top_prob")
        ):
            raise ValueError(
                f"threshold is a probability for {self.remasking!r}; "
                f"expected 0 < threshold <= 1, got {self.threshold}."
            )


CACHES = (None, "prefix", "dual")

# logits_hook(logits (B, n, V) of positions offset .. offset + n, canvas x (B, L), candidates
# (B, L) bool, offset) -> logits
LogitsHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class TokenIds:
    """The special ids a sampler needs; only the mask is required."""

    mask: int  # the mask token the canvas starts from
    eos: int | None = None  # end of text (for logits_eos_inf / confidence_eos_eot_inf)
    eot: int | None = None  # end of a chat turn (for confidence_eos_eot_inf)
    pad: int | None = None  # padding id of batched prompts (checked: never the mask id)


def _model_eos(model: Callable, eos_id: int | None) -> int | None:
    """``eos_id`` if given, else the model config's (None if it has none)."""
    if eos_id is not None:
        return eos_id
    return getattr(getattr(model, "config", None), "eos_token_id", None)


def _as_batch(ids: torch.Tensor, name: str) -> torch.Tensor:
    ids = torch.as_tensor(ids)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2:
        raise ValueError(f"{name} must be (P,) or (B, P) token ids, got shape {tuple(ids.shape)}.")
    return ids.long()


def _check(
    model: Callable,
    x: torch.Tensor,
    config: SamplerConfig,
    ids: TokenIds,
    max_length: int | None,
) -> None:
    """The checks generate and infill share: special ids fit the options, the canvas fits."""
    if ids.pad is not None and ids.pad == ids.mask:
        raise ValueError(
            f"pad_id == mask_id == {ids.mask}: padding would be read as positions to generate. "
            "Pad with another id (LLaDA pads with EOS, 126081, and masks with 126336)."
        )
    if config.logits_eos_inf and ids.eos is None:
        raise ValueError("logits_eos_inf=True needs eos_id (the end-of-sequence token id).")
    if config.confidence_eos_eot_inf and ids.eos is None and ids.eot is None:
        raise ValueError("confidence_eos_eot_inf=True needs eos_id and/or eot_id.")
    context = context_length(model, max_length)
    if context is not None and x.shape[1] > context:
        raise ValueError(
            f"The canvas has {x.shape[1]} positions but the model's context is {context} tokens; "
            "shorten the prompt or gen_length (or pass max_length if the model can take more)."
        )


def denoise(
    model: Callable,
    x: torch.Tensor,
    windows: list[tuple[int, int]],
    config: SamplerConfig,
    ids: TokenIds,
    *,
    prompt_length: int = 0,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    trace: bool = False,
    logits_hook: LogitsHook | None = None,
) -> tuple[torch.Tensor, Trace | None]:
    """The reverse loop: reveal the masks of each window [start, end) of ``x`` (B, L), left to
    right, ``config.steps`` steps per window (or until none is left, with a threshold).
    ``logits_hook(logits, x, candidates, offset)`` may change the logits of each step before
    anything is proposed (candidates: (B, L) bool, the masked positions of the current window;
    the logits cover positions offset .. offset + n).

    With ``config.cache`` the first step of each window (and every ``cache_refresh``-th) runs the
    full forward and records every layer's keys and values; the other steps recompute only the
    window and what follows it ("prefix") or the window alone ("dual"), and read the rest from the
    cache (``minillada.models.kv_cache``)."""
    B, L = x.shape
    mask_id = ids.mask
    prompt_index = x != mask_id  # fixed once, as in the official code: pads count as prompt
    eos_eot = [i for i in (ids.eos, ids.eot) if i is not None]
    suppressed = eos_eot if config.confidence_eos_eot_inf else []
    rec = Trace(prompt_length, mask_id, canvases=[x.cpu().clone()]) if trace else None
    if config.cache is not None and not getattr(model, "supports_kv_cache", False):
        raise ValueError(
            f"cache={config.cache!r} needs a minillada LLaDAModel (it computes a window of "
            f"positions against cached keys and values); got a {type(model).__name__}."
        )
    kv = KVCache()
    for w, (start, end) in enumerate(windows):
        masked_count = (x[:, start:end] == mask_id).sum(dim=1)  # (B,)
        schedule = (
            None
            if config.threshold is not None
            else num_transfer_tokens(masked_count, config.steps)
        )
        step = 0
        while (x[:, start:end] == mask_id).any():
            if schedule is not None and step == schedule.shape[1]:
                break
            offset = 0  # logits cover positions offset .. offset + n
            refresh = step == 0 or (config.cache_refresh and step % config.cache_refresh == 0)
            if config.cache is None:
                logits = guided_logits(
                    model, x, prompt_index, mask_id, config.cfg_scale, attention_mask
                )
            elif refresh:  # a full forward that records every layer's keys and values
                logits = model(x, attention_mask, cache=kv.record())
            else:  # the window (and, for a prefix cache, all after it) against the cache
                offset, stop = start, (L if config.cache == "prefix" else end)
                logits = model(x[:, offset:stop], attention_mask, cache=kv, start=offset)
            if logits_hook is not None:
                candidates = torch.zeros_like(x, dtype=torch.bool)
                candidates[:, start:end] = x[:, start:end] == mask_id
                logits = logits_hook(logits, x, candidates, offset)
            # Only the window can hold candidates: left of it nothing is masked, right of it the
            # official code sets the confidence to -inf. Work in float64 from here on.
            win = logits[:, start - offset : end - offset].to(torch.float64, copy=True)  # (B, W, V)
            if config.logits_mask_inf:
                win[..., mask_id] = NEG_INF
            if config.logits_eos_inf:
                win[..., ids.eos] = NEG_INF  # EOS can never be proposed (official flag)
            x0 = gumbel_argmax(win, config.temperature, generator, config.noise_dtype)  # (B, W)
            if suppressed:
                # Score the proposals as if EOS and EoT did not exist: a position whose proposal is
                # one of them gets probability 0, i.e. it is revealed last. The official generate.py
                # means to do this with a chained assignment `a[..., eos] = b[..., eot] = -inf`,
                # which really sets EOS in the noisy copy and EoT in the clean logits, so at
                # temperature > 0 EOS is never suppressed (ML-GSAI/LLaDA issue #137, PR #139). We
                # deliberately do not reproduce that bug: both are suppressed at any temperature.
                win = win.clone()
                win[..., suppressed] = NEG_INF
            conf = confidence_scores(win, x0, config.remasking, generator)  # (B, W) float64
            if suppressed and config.remasking not in ("low_confidence", "top_prob"):
                lowest = torch.finfo(torch.float64).min  # below every real score, above -inf
                conf = torch.where(
                    torch.isin(x0, torch.tensor(suppressed, device=x0.device)), lowest, conf
                )
            masked = x[:, start:end] == mask_id
            confidence = torch.full((B, L), NEG_INF, dtype=torch.float64, device=x.device)
            confidence[:, start:end] = torch.where(masked, conf, NEG_INF)
            k = None if schedule is None else schedule[:, step]
            reveal = positions_to_reveal(confidence, k, config.threshold)  # (B, L) bool
            if config.threshold is not None and (x0[reveal[:, start:end]] == mask_id).all():
                raise RuntimeError(
                    "The model proposed the mask token itself at every position chosen this step, "
                    "so threshold decoding cannot make progress. Pass logits_mask_inf=True."
                )
            x = x.clone()
            x[:, start:end] = torch.where(reveal[:, start:end], x0, x[:, start:end])
            if rec is not None:
                rec.canvases.append(x.cpu().clone())
                rec.revealed.append(reveal.cpu())
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
    at least one per step). attention_mask: (B, P), 1 = real token, 0 = left padding.
    logits_mask_inf: never propose the mask token itself (off by default, as in the official code).
    cache: "prefix" or "dual" (Fast-dLLM's approximate caches, lesson 8), refreshed at each block
    and every ``cache_refresh`` steps. The other options are SamplerConfig's fields. With
    ``trace=True`` returns (tokens, Trace). mask_id and eos_id default to the model config's
    (``minillada.runtime.mask_id_of``).
    """
    mask_id = mask_id_of(model, mask_id)
    eos_id = _model_eos(model, eos_id)
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
        attention_mask = _as_batch(attention_mask, "attention_mask")
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
    _check(model, x, config, ids, max_length)
    windows = [(P + b * block_length, P + (b + 1) * block_length) for b in range(num_blocks)]
    x, rec = denoise(
        model,
        x,
        windows,
        config,
        ids,
        prompt_length=P,
        attention_mask=attention_mask,
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
    eos_id = _model_eos(model, eos_id)
    x = _as_batch(ids, "ids")
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
        attention_mask = _as_batch(attention_mask, "attention_mask").to(x.device)
    token_ids = TokenIds(mask=mask_id, eos=eos_id, eot=eot_id, pad=pad_id)
    _check(model, x, config, token_ids, max_length)
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


# iLLaDA's variable-length generation: one block of masks at a time, until the answer stops.


def _contains(tokens: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
    """(B,) bool: whether each row of tokens (B, n) contains the token sequence (k,)."""
    k = len(sequence)
    if k == 0 or tokens.shape[1] < k:
        return torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    return (tokens.unfold(1, k, 1) == sequence).all(-1).any(-1)


@contextmanager
def counting_positions(model) -> Iterator[list[int]]:
    """Inside the ``with`` block, the number of positions (batch x length) each forward pass of
    ``model`` runs over is appended to the list it yields: the work of a sampler, measured without
    timing noise. The model's embedding sees exactly the ids of every pass; a model without a
    ``transformer.wte`` embedding yields an empty list."""
    seen: list[int] = []
    embedding = getattr(getattr(model, "transformer", None), "wte", None)
    hook = None
    if embedding is not None:
        hook = embedding.register_forward_hook(
            lambda module, inputs, out: seen.append(out.shape[0] * out.shape[1])
        )
    try:
        yield seen
    finally:
        if hook is not None:
            hook.remove()


class CountedModel:
    """``model`` with a count of its calls (forward passes); every attribute is the model's."""

    def __init__(self, model: Callable):
        self.model, self.calls = model, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def end_think_boost(
    logits: torch.Tensor,
    x: torch.Tensor,
    candidates: torch.Tensor,
    context_start: int,
    total_length: int,
    think_end_ids: list[int],
    boost: float,
    power: float = 2.0,
    offset: int = 0,
) -> torch.Tensor:
    """The iLLaDA authors' end-of-thinking boost: while a row's answer does not yet contain the
    ``think_end_ids`` sequence (``</think>``), add ``boost * progress**power`` to the logit of its
    next token at the row's first still-masked position of the current block, where
    progress = (position - context_start + 1) / total_length, clipped to [0, 1]. The next token is
    the one that continues the longest partial match of the sequence just left of that position.
    It fights the endless "let me check again" of a long reasoning. logits (B, n, V) of the
    positions offset .. offset + n (all of x by default)."""
    if boost <= 0 or not think_end_ids or total_length <= 0:
        return logits
    V = logits.shape[-1]
    if any(not 0 <= i < V for i in think_end_ids):
        raise ValueError(f"think_end_ids {think_end_ids} are not all ids of the {V}-token vocab.")
    seq = torch.tensor(think_end_ids, dtype=torch.long, device=logits.device)  # (k,)
    active = candidates.any(dim=1) & ~_contains(x[:, context_start:], seq)  # (B,)
    if not bool(active.any()):
        return logits
    position = candidates.int().argmax(dim=1)  # (B,) the first candidate of each row
    token = seq[0].expand(len(x)).clone()
    matched = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for prefix in range(len(seq) - 1, 0, -1):  # the longest partial match wins
        window = (position[:, None] + torch.arange(-prefix, 0, device=x.device)).clamp_min(0)
        fits = (position - context_start >= prefix) & (x.gather(1, window) == seq[:prefix]).all(1)
        token = torch.where(fits & ~matched, seq[prefix], token)
        matched |= fits
    progress = ((position - context_start + 1).double() / total_length).clamp(0.0, 1.0)
    rows = active.nonzero(as_tuple=True)[0]
    out = logits.clone()
    out[rows, position[rows] - offset, token[rows]] += (boost * progress.pow(power))[rows].to(
        out.dtype
    )
    return out


@dataclass
class VariableLengthResult:
    tokens: torch.Tensor  # (1, P + blocks * block_length): the prompt and every generated block
    prompt_length: int
    blocks: int  # blocks generated
    forward_passes: int  # model calls (one per step; a guided step is one batched call)
    stopped: bool  # True: a stop id or string appeared; False: the budget ran out

    @property
    def generated(self) -> torch.Tensor:
        """(n,) the generated ids, whole blocks (a stop token and what follows it included)."""
        return self.tokens[0, self.prompt_length :]

    def answer(self, stop_ids: list[int]) -> torch.Tensor:
        """The generated ids up to (not including) the first of ``stop_ids``."""
        return until_stop(self.generated, stop_ids)


def until_stop(ids: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """(n,) ids -> the ids before the first of ``stop_ids`` (all of them if none occurs)."""
    hits = torch.isin(ids, torch.tensor(list(stop_ids), device=ids.device)).nonzero()
    return ids[: int(hits[0])] if len(hits) else ids


@torch.no_grad()
def var_generate(
    model: Callable,
    prompt_ids: torch.Tensor,
    gen_length: int,
    block_length: int,
    steps: int,
    mask_id: int | None = None,
    *,
    stop_ids: list[int] | None = None,
    stop_strings: list[str] | None = None,
    decode: Callable[[list[int]], str] | None = None,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 0.0,
    think_end_ids: list[int] | None = None,
    think_end_boost: float = 0.0,
    think_end_power: float = 2.0,
    threshold: float | None = None,
    cache: str | None = None,
    cache_refresh: int | None = None,
    noise_dtype: torch.dtype = torch.float64,
    max_length: int | None = None,
    generator: torch.Generator | None = None,
) -> VariableLengthResult:
    """iLLaDA's variable-length generation (the authors' ``var_generate``): append one block of
    ``block_length`` masks to the prompt, denoise it with LLaDA's rule in ``steps`` steps (steps per
    block here, not in all), and repeat until a block produces a stop id (default: the model's
    EOS) or a stop string (``stop_strings`` with ``decode``), or the budget of ``gen_length`` tokens
    is spent. The budget is clipped to the context minus the prompt, in whole blocks. One unpadded
    prompt (P,) or (1, P). ``think_end_*``: the end-of-thinking boost (``end_think_boost``) the
    authors use for iLLaDA-8B-Instruct (boost 100, power 3). ``threshold``: reveal every token
    whose confidence reaches it (at least one per step) instead of ``steps`` steps per block
    (``steps`` may then be None). ``cache``: "prefix" or "dual" (lesson 8); with one block of
    masks on the canvas there is no masked suffix, so the two are the same here: the prompt and
    the finished blocks are read from a cache recorded at each block's first step."""
    mask_id = mask_id_of(model, mask_id)
    prompt = _as_batch(prompt_ids, "prompt_ids")
    if prompt.shape[0] != 1:
        raise ValueError(
            f"var_generate takes one unpadded prompt, got a batch of {prompt.shape[0]}: the blocks "
            "of different rows would stop at different times (the authors' code asserts this too)."
        )
    if block_length < 1 or gen_length % block_length:
        raise ValueError(
            f"gen_length={gen_length} is not a multiple of block_length={block_length}: the budget "
            "is spent in whole blocks."
        )
    if stop_strings is not None:
        if any(s == "" for s in stop_strings):
            raise ValueError("An empty stop string would stop every answer at once; remove it.")
        if decode is None:
            raise ValueError("stop_strings need decode= (token ids -> text) to be checked.")
    if stop_ids is None and stop_strings is None:
        eos = _model_eos(model, None)
        if eos is None:
            raise ValueError(
                "No stop rule: pass stop_ids= (e.g. the tokenizer's stop_ids) or stop_strings=; "
                "this model's config names no eos_token_id."
            )
        stop_ids = [eos]
    P = prompt.shape[1]
    budget = gen_length
    context = context_length(model, max_length)
    if context is not None:
        budget = min(gen_length, (context - P) // block_length * block_length)
        if budget < block_length:
            raise ValueError(
                f"The prompt ({P} tokens) leaves no room for one block of {block_length} in the "
                f"model's context of {context} tokens; shorten the prompt or the block."
            )
    config = SamplerConfig(
        steps=None if threshold is not None else steps,
        temperature=temperature,
        remasking=remasking,
        cfg_scale=cfg_scale,
        threshold=threshold,
        noise_dtype=noise_dtype,
        cache=cache,
        cache_refresh=cache_refresh,
    )
    if threshold is None and steps > block_length:
        raise ValueError(
            f"steps={steps} per block is more than the {block_length} masked tokens of a block; "
            f"every step must reveal at least one token, so use steps <= {block_length}."
        )
    counted = CountedModel(model)  # counts forward passes; behaves as the model otherwise

    def hook(logits, x, candidates, offset):
        return end_think_boost(
            logits, x, candidates, P, gen_length, think_end_ids or [], think_end_boost,
            think_end_power, offset,
        )  # fmt: skip

    x = prompt.to(model_device(model))
    ids = TokenIds(mask=mask_id, eos=_model_eos(model, None))
    blocks, stopped = 0, False
    while blocks * block_length < budget:
        masks = torch.full((1, block_length), mask_id, dtype=torch.long, device=x.device)
        x = torch.cat([x, masks], dim=1)  # (1, P + blocks * block_length): one more block
        window = [(x.shape[1] - block_length, x.shape[1])]
        x, _ = denoise(
            counted,
            x,
            window,
            config,
            ids,
            prompt_length=P,
            generator=generator,
            logits_hook=hook if think_end_boost > 0 else None,
        )
        blocks += 1
        generated = x[0, P:]
        if stop_ids and bool(torch.isin(generated, torch.tensor(stop_ids, device=x.device)).any()):
            stopped = True
        if stop_strings and any(s in decode(generated.tolist()) for s in stop_strings):
            stopped = True
        if stopped:
            break
    return VariableLengthResult(x.cpu(), P, blocks, counted.calls, stopped)
