"""The reverse loop every sampler runs (``denoise``), and what it is told: ``SamplerConfig`` (how to
denoise) and ``TokenIds`` (the special ids). ``minillada.sampling.generate`` (the fixed canvas,
infilling, lesson 1's sampler) and ``minillada.sampling.variable_length`` (iLLaDA's block after
block) build the canvas and the windows; this module reveals the masks.

A batch may hold rows of different lengths, left-padded: ``attention_mask`` (B, L) hides the
padding, and ``positions`` (B, L) numbers each row from its first real token
(``minillada.models.attention.row_positions``), so every row computes what it computes alone.
Inside a window a row whose masks are all revealed (threshold decoding finishes rows at different
steps) leaves the forward passes: only the rows with masks left are computed, and a cache keeps
only their keys and values.

Shapes: B = batch, b = rows with masks left, L = canvas, V = vocabulary, W = window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from minillada.diffusion.guidance import cuts_logits, guided_logits, model_logits
from minillada.models.kv_cache import KVCache
from minillada.runtime import context_length
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

# logits_hook(logits (b, n, V) of positions offset .. offset + n, canvas x (b, L), candidates
# (b, L) bool, offset, rows (b,) long: which rows of the batch these b are) -> logits
LogitsHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TokenIds:
    """The special ids a sampler needs; only the mask is required."""

    mask: int  # the mask token the canvas starts from
    eos: int | None = None  # end of text (for logits_eos_inf / confidence_eos_eot_inf)
    eot: int | None = None  # end of a chat turn (for confidence_eos_eot_inf)
    pad: int | None = None  # padding id of batched prompts (checked: never the mask id)


def model_eos(model: Callable, eos_id: int | None) -> int | None:
    """``eos_id`` if given, else the model config's (None if it has none)."""
    if eos_id is not None:
        return eos_id
    return getattr(getattr(model, "config", None), "eos_token_id", None)


def as_batch(ids: torch.Tensor, name: str) -> torch.Tensor:
    ids = torch.as_tensor(ids)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2:
        raise ValueError(f"{name} must be (P,) or (B, P) token ids, got shape {tuple(ids.shape)}.")
    return ids.long()


def check_canvas(
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


@dataclass
class RowWork:
    """The work each row of a batch took part in: forward passes, the positions they ran over
    (padding included: what the device paid for; a guided step is one pass over 2 x its width),
    and its share of the steps' wall time (each step's seconds split evenly over the rows it
    computed, so the shares of a batch add up to its time)."""

    passes: torch.Tensor  # (B,) long
    positions: torch.Tensor  # (B,) long
    seconds: torch.Tensor  # (B,) float64

    @classmethod
    def zeros(cls, batch: int) -> RowWork:
        n = torch.zeros(batch, dtype=torch.long)
        return cls(n, n.clone(), torch.zeros(batch, dtype=torch.float64))

    def add(self, rows: torch.Tensor, width: int, seconds: float) -> None:
        rows = rows.cpu()
        self.passes[rows] += 1
        self.positions[rows] += width
        self.seconds[rows] += seconds / len(rows)


def denoise(
    model: Callable,
    x: torch.Tensor,
    windows: list[tuple[int, int]],
    config: SamplerConfig,
    ids: TokenIds,
    *,
    prompt_length: int = 0,
    attention_mask: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    trace: bool = False,
    logits_hook: LogitsHook | None = None,
    work: RowWork | None = None,
) -> tuple[torch.Tensor, Trace | None]:
    """The reverse loop: reveal the masks of each window [start, end) of ``x`` (B, L), left to
    right, ``config.steps`` steps per window (or until none is left, with a threshold).
    ``logits_hook(logits, x, candidates, offset, rows)`` may change the logits of each step before
    anything is proposed (x and candidates, the masked positions of the current window, are those
    of the ``rows`` computed this step; the logits cover positions offset .. offset + n).
    ``positions`` (B, L): each row's RoPE positions, for a batch of left-padded rows. ``work``
    counts the passes and positions each row took part in.

    With ``config.cache`` the first step of each window (and every ``cache_refresh``-th) runs the
    full forward and records every layer's keys and values; the other steps recompute only the
    window and what follows it ("prefix") or the window alone ("dual"), and read the rest from the
    cache (``minillada.models.kv_cache``)."""
    B, L = x.shape
    mask_id = ids.mask
    prompt_index = x != mask_id  # fixed once, as in the official code: pads count as prompt
    eos_eot = [i for i in (ids.eos, ids.eot) if i is not None]
    suppressed = eos_eot if config.confidence_eos_eot_inf else []
    guided = config.cache is None and config.cfg_scale > 0
    rec = Trace(prompt_length, mask_id, canvases=[x.cpu().clone()]) if trace else None
    if config.cache is not None and not getattr(model, "supports_kv_cache", False):
        raise ValueError(
            f"cache={config.cache!r} needs a minillada LLaDAModel (it computes a window of "
            f"positions against cached keys and values); got a {type(model).__name__}."
        )
    kv = KVCache()
    everyone = torch.arange(B, device=x.device)
    # logits cover positions offset .. offset + n: those left of the window are never needed, and
    # a minillada model skips their output head (``logits_from``)
    cuts = cuts_logits(model)

    def rows_of(t: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
        """t's rows ``rows`` (t itself when that is every row)."""
        return t if t is None or len(rows) == B else t[rows]

    for w, (start, end) in enumerate(windows):
        masked_count = (x[:, start:end] == mask_id).sum(dim=1)  # (B,)
        schedule = (
            None
            if config.threshold is not None
            else num_transfer_tokens(masked_count, config.steps)
        )
        step, cached = 0, everyone  # cached: the rows whose keys and values the cache holds
        while True:
            began = time.perf_counter()
            live = everyone[(x[:, start:end] == mask_id).any(dim=1)]  # (b,) rows with masks left
            if len(live) == 0 or (schedule is not None and step == schedule.shape[1]):
                break
            xs, am, pos = rows_of(x, live), rows_of(attention_mask, live), rows_of(positions, live)
            offset = start if cuts else 0
            cut = start if cuts else None
            refresh = step == 0 or (config.cache_refresh and step % config.cache_refresh == 0)
            if config.cache is None:
                logits = guided_logits(
                    model, xs, rows_of(prompt_index, live), mask_id, config.cfg_scale, am, pos, cut
                )
            elif refresh:  # a full forward that records every layer's keys and values
                logits = model_logits(model, xs, am, pos, cut, cache=kv.record())
                cached = live
            else:  # the window (and, for a prefix cache, all after it) against the cache
                if not torch.equal(cached, live):  # rows that finished leave the cache too
                    kv.select(torch.searchsorted(cached, live))
                    cached = live
                offset, stop = start, (L if config.cache == "prefix" else end)
                window_pos = None if pos is None else pos[:, offset:stop]
                logits = model_logits(
                    model, xs[:, offset:stop], am, window_pos, cache=kv, start=offset
                )
            window_pass = config.cache is not None and not refresh
            width = logits.shape[1] if window_pass else xs.shape[1]  # the layers' positions
            if logits_hook is not None:
                candidates = torch.zeros_like(xs, dtype=torch.bool)
                candidates[:, start:end] = xs[:, start:end] == mask_id
                logits = logits_hook(logits, xs, candidates, offset, live)
            # Only the window can hold candidates: left of it nothing is masked, right of it the
            # official code sets the confidence to -inf. Work in float64 from here on.
            win = logits[:, start - offset : end - offset].to(torch.float64, copy=True)  # (b, W, V)
            if config.logits_mask_inf:
                win[..., mask_id] = NEG_INF
            if config.logits_eos_inf:
                win[..., ids.eos] = NEG_INF  # EOS can never be proposed (official flag)
            x0 = gumbel_argmax(win, config.temperature, generator, config.noise_dtype)  # (b, W)
            if suppressed:
                # Score the proposals as if EOS and EoT did not exist: a position whose proposal is
                # one of them gets probability 0, i.e. it is revealed last. The official generate.py
                # means to do this with a chained assignment `a[..., eos] = b[..., eot] = -inf`,
                # which really sets EOS in the noisy copy and EoT in the clean logits, so at
                # temperature > 0 EOS is never suppressed (ML-GSAI/LLaDA issue #137, PR #139). We
                # deliberately do not reproduce that bug: both are suppressed at any temperature.
                win = win.clone()
                win[..., suppressed] = NEG_INF
            conf = confidence_scores(win, x0, config.remasking, generator)  # (b, W) float64
            if suppressed and config.remasking not in ("low_confidence", "top_prob"):
                lowest = torch.finfo(torch.float64).min  # below every real score, above -inf
                conf = torch.where(
                    torch.isin(x0, torch.tensor(suppressed, device=x0.device)), lowest, conf
                )
            masked = xs[:, start:end] == mask_id
            confidence = torch.full((len(live), L), NEG_INF, dtype=torch.float64, device=x.device)
            confidence[:, start:end] = torch.where(masked, conf, NEG_INF)
            k = None if schedule is None else schedule[live.to(schedule.device), step]
            reveal = positions_to_reveal(confidence, k, config.threshold)  # (b, L) bool
            if config.threshold is not None and (x0[reveal[:, start:end]] == mask_id).all():
                raise RuntimeError(
                    "The model proposed the mask token itself at every position chosen this step, "
                    "so threshold decoding cannot make progress. Pass logits_mask_inf=True."
                )
            x = x.clone()
            x[live, start:end] = torch.where(reveal[:, start:end], x0, xs[:, start:end])
            if work is not None:  # the next step's check of x waits for this one on a GPU
                work.add(live, width * (2 if guided else 1), time.perf_counter() - began)
            if rec is not None:
                every_conf = torch.full((B, L), NEG_INF, dtype=torch.float64)
                every_reveal = torch.zeros((B, L), dtype=torch.bool)
                every_conf[live.cpu()], every_reveal[live.cpu()] = confidence.cpu(), reveal.cpu()
                rec.canvases.append(x.cpu().clone())
                rec.revealed.append(every_reveal)
                rec.confidence.append(every_conf)
                rec.blocks.append(w)
            step += 1
    return x, rec
