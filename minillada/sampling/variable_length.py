"""iLLaDA's variable-length generation (the authors' ``var_generate``): one block of masks at a
time after the prompt, each denoised with LLaDA's rule, until the answer stops.

``var_generate`` answers one prompt; ``var_generate_batch`` answers many, ``batch_size`` at a
time, each row exactly as alone (at temperature 0):

* **alignment**: every row's current block sits at the right end of the canvas; shorter rows are
  padded on the left, padded keys are masked out, and each row's RoPE positions count from its
  first real token (``row_positions``), so a row computes what it computes alone;
* every row appends a block at the same time; a row that stops (a stop id or string, or its
  budget spent) **leaves the batch** and spends no more forward passes;
* prompts join longest first (rows of similar lengths waste little of the canvas on padding),
  and a finished row's place goes to the next waiting prompt at the next block (continuous
  batching). We chose
  this over finishing the whole batch first because per-answer lengths vary about 10x on GSM8K:
  without refills a batch runs as long as its longest answer with most rows gone, so the batch
  would shrink towards batch 1; with refills it stays full until the queue runs out. The price is
  padding: a new row's prompt sits beside older rows' longer canvases;
* inside a block, threshold decoding finishes rows at different steps: a finished row waits for
  the block to end, without passes (``minillada.sampling.denoise``);
* the end-of-thinking boost, the budget (clipped to each row's room in the context) and the stop
  rules are per row; with a cache each row's keys and values are its own.

At temperature > 0 the random draws of a batch differ from those of batch 1 (same distribution,
other samples). Shapes: B = rows in the batch, P = prompt length, T = canvas, V = vocabulary.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from minillada.models.attention import row_positions
from minillada.runtime import context_length, mask_id_of, model_device
from minillada.sampling.denoise import RowWork, SamplerConfig, TokenIds, denoise, model_eos


def _contains(tokens: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
    """(B,) bool: whether each row of tokens (B, n) contains the token sequence (k,)."""
    k = len(sequence)
    if k == 0 or tokens.shape[1] < k:
        return torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    return (tokens.unfold(1, k, 1) == sequence).all(-1).any(-1)


def end_think_boost(
    logits: torch.Tensor,
    x: torch.Tensor,
    candidates: torch.Tensor,
    context_start: int | torch.Tensor,
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
    positions offset .. offset + n (all of x by default); ``context_start``: where the answer
    starts, one int or (B,), one per row of a left-padded batch."""
    if boost <= 0 or not think_end_ids or total_length <= 0:
        return logits
    V = logits.shape[-1]
    if any(not 0 <= i < V for i in think_end_ids):
        raise ValueError(f"think_end_ids {think_end_ids} are not all ids of the {V}-token vocab.")
    B, T = x.shape
    seq = torch.tensor(think_end_ids, dtype=torch.long, device=logits.device)  # (k,)
    start = torch.as_tensor(context_start, device=x.device).reshape(-1).expand(B)  # (B,)
    answer = torch.where(torch.arange(T, device=x.device) >= start[:, None], x, -1)  # (B, T)
    active = candidates.any(dim=1) & ~_contains(answer, seq)  # (B,)
    if not bool(active.any()):
        return logits
    position = candidates.int().argmax(dim=1)  # (B,) the first candidate of each row
    token = seq[0].expand(B).clone()
    matched = torch.zeros(B, dtype=torch.bool, device=x.device)
    for prefix in range(len(seq) - 1, 0, -1):  # the longest partial match wins
        window = (position[:, None] + torch.arange(-prefix, 0, device=x.device)).clamp_min(0)
        fits = (position - start >= prefix) & (x.gather(1, window) == seq[:prefix]).all(1)
        token = torch.where(fits & ~matched, seq[prefix], token)
        matched |= fits
    progress = ((position - start + 1).double() / total_length).clamp(0.0, 1.0)
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
    forward_passes: int  # passes this row took part in (a guided step is one batched call)
    stopped: bool  # True: a stop id or string appeared; False: the budget ran out
    positions_processed: int = 0  # positions those passes ran over for this row (padding included)
    seconds: float = 0.0  # its share of the steps' wall time (split evenly over the rows of each)

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


@dataclass
class _Row:
    """One answer in the making."""

    index: int  # its prompt's place in the input
    tokens: torch.Tensor  # (P + blocks * block_length,) prompt and finished blocks
    prompt_length: int
    budget: int  # tokens it may generate: gen_length, clipped to its room in the context
    blocks: int = 0
    passes: int = 0
    positions: int = 0
    seconds: float = 0.0


def _prompt_list(prompts: Sequence) -> list[torch.Tensor]:
    out = []
    for i, prompt in enumerate(prompts):
        p = torch.as_tensor(prompt, dtype=torch.long)
        if p.dim() == 2 and p.shape[0] == 1:
            p = p[0]
        if p.dim() != 1:
            raise ValueError(
                f"Prompt {i} has shape {tuple(p.shape)}; each prompt is (P,) token ids, unpadded."
            )
        out.append(p.cpu())
    return out


@torch.no_grad()
def var_generate_batch(
    model: Callable,
    prompts: Sequence[torch.Tensor | Sequence[int]],
    gen_length: int,
    block_length: int,
    steps: int | None,
    mask_id: int | None = None,
    *,
    batch_size: int = 8,
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
    logits_mask_inf: bool = False,
    noise_dtype: torch.dtype = torch.float64,
    max_length: int | None = None,
    generator: torch.Generator | None = None,
    on_result: Callable[[int, VariableLengthResult], None] | None = None,
) -> list[VariableLengthResult]:
    """``var_generate`` on every prompt of ``prompts`` (each (P,) ids, unpadded, lengths free),
    ``batch_size`` rows at a time (see the module docstring): one result per prompt, in order.
    ``on_result(index, result)`` is called as each answer finishes (in finishing order), so a
    caller can keep it before the others are done. ``logits_mask_inf``: never propose the mask
    token (a trained model hardly does; a random one may, and threshold decoding then stalls).
    Every check runs before any forward pass."""
    mask_id = mask_id_of(model, mask_id)
    prompts = _prompt_list(prompts)
    if not prompts:
        raise ValueError("No prompts: pass at least one.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (rows per forward), got {batch_size}.")
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
        eos = model_eos(model, None)
        if eos is None:
            raise ValueError(
                "No stop rule: pass stop_ids= (e.g. the tokenizer's stop_ids) or stop_strings=; "
                "this model's config names no eos_token_id."
            )
        stop_ids = [eos]
    config = SamplerConfig(
        steps=None if threshold is not None else steps,
        temperature=temperature,
        remasking=remasking,
        cfg_scale=cfg_scale,
        threshold=threshold,
        logits_mask_inf=logits_mask_inf,
        noise_dtype=noise_dtype,
        cache=cache,
        cache_refresh=cache_refresh,
    )
    if threshold is None and steps > block_length:
        raise ValueError(
            f"steps={steps} per block is more than the {block_length} masked tokens of a block; "
            f"every step must reveal at least one token, so use steps <= {block_length}."
        )
    context = context_length(model, max_length)
    budgets = []
    for i, p in enumerate(prompts):
        which = "The prompt" if len(prompts) == 1 else f"Prompt {i}"
        if bool((p == mask_id).any()):
            raise ValueError(
                f"{which} contains the mask id {mask_id}: it would be read as a position to "
                "fill. Check the tokenizer's mask id against the model's."
            )
        budget = gen_length
        if context is not None:
            budget = min(gen_length, (context - len(p)) // block_length * block_length)
            if budget < block_length:
                raise ValueError(
                    f"{which} ({len(p)} tokens) leaves no room for one block of {block_length} "
                    f"in the model's context of {context} tokens; shorten the prompt or the block."
                )
        budgets.append(budget)
    device = model_device(model)
    ids = TokenIds(mask=mask_id, eos=model_eos(model, None))
    stop = torch.tensor(stop_ids or [], dtype=torch.long)
    fill = 0 if mask_id != 0 else 1  # any id but the mask: padded keys are masked out
    results: list[VariableLengthResult | None] = [None] * len(prompts)
    # Longest prompts first: rows of similar lengths share a canvas, so little of it is padding,
    # and the largest canvases (the peak memory) come at the start. The order changes no answer.
    by_length = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    waiting, active = deque(by_length), []
    while waiting or active:
        while waiting and len(active) < batch_size:  # a finished row's place goes to the next
            i = waiting.popleft()
            active.append(_Row(i, prompts[i], len(prompts[i]), budgets[i]))
        B = len(active)
        T = max(len(r.tokens) for r in active) + block_length  # every block ends at T
        x = torch.full((B, T), fill, dtype=torch.long)
        keep = torch.zeros((B, T), dtype=torch.long)
        for b, r in enumerate(active):
            n = len(r.tokens)
            x[b, T - block_length - n : T - block_length] = r.tokens
            x[b, T - block_length :] = mask_id
            keep[b, T - block_length - n :] = 1
        padded = not bool(keep.all())
        # where each row's answer starts on this canvas (the boost's progress counts from there)
        answer_start = torch.tensor(
            [T - block_length - len(r.tokens) + r.prompt_length for r in active]
        )
        x = x.to(device)
        attention_mask = keep.to(device) if padded else None
        positions = row_positions(keep).to(device) if padded else None
        starts = answer_start.to(device)

        def hook(logits, xs, candidates, offset, rows, starts=starts):
            return end_think_boost(
                logits, xs, candidates, starts[rows], gen_length, think_end_ids or [],
                think_end_boost, think_end_power, offset,
            )  # fmt: skip

        work = RowWork.zeros(B)
        x, _ = denoise(
            model,
            x,
            [(T - block_length, T)],
            config,
            ids,
            attention_mask=attention_mask,
            positions=positions,
            generator=generator,
            logits_hook=hook if think_end_boost > 0 else None,
            work=work,
        )
        blocks = x[:, T - block_length :].cpu()  # (B, block_length)
        still = []
        for b, r in enumerate(active):
            r.tokens = torch.cat([r.tokens, blocks[b]])
            r.blocks += 1
            r.passes += int(work.passes[b])
            r.positions += int(work.positions[b])
            r.seconds += float(work.seconds[b])
            generated = r.tokens[r.prompt_length :]
            stopped = bool(torch.isin(generated, stop).any()) if len(stop) else False
            if not stopped and stop_strings:
                stopped = any(s in decode(generated.tolist()) for s in stop_strings)
            if stopped or r.blocks * block_length >= r.budget:
                result = VariableLengthResult(
                    r.tokens[None],
                    r.prompt_length,
                    r.blocks,
                    r.passes,
                    stopped,
                    r.positions,
                    r.seconds,
                )
                results[r.index] = result
                if on_result is not None:
                    on_result(r.index, result)
            else:
                still.append(r)
        active = still
    return results  # type: ignore[return-value]


@torch.no_grad()
def var_generate(
    model: Callable,
    prompt_ids: torch.Tensor,
    gen_length: int,
    block_length: int,
    steps: int | None,
    mask_id: int | None = None,
    **options,
) -> VariableLengthResult:
    """iLLaDA's variable-length generation (the authors' ``var_generate``): append one block of
    ``block_length`` masks to the prompt, denoise it with LLaDA's rule in ``steps`` steps (steps per
    block here, not in all), and repeat until a block produces a stop id (default: the model's
    EOS) or a stop string (``stop_strings`` with ``decode``), or the budget of ``gen_length`` tokens
    is spent. The budget is clipped to the context minus the prompt, in whole blocks. One unpadded
    prompt (P,) or (1, P); for many, ``var_generate_batch``. ``think_end_*``: the end-of-thinking
    boost (``end_think_boost``) the authors use for iLLaDA-8B-Instruct (boost 100, power 3).
    ``threshold``: reveal every token whose confidence reaches it (at least one per step) instead
    of ``steps`` steps per block (``steps`` may then be None). ``cache``: "prefix" or "dual"
    (lesson 8); with one block of masks on the canvas there is no masked suffix, so the two are
    the same here: the prompt and the finished blocks are read from a cache recorded at each
    block's first step. The other options are ``var_generate_batch``'s."""
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long)
    if prompt.dim() == 2 and prompt.shape[0] != 1:
        raise ValueError(
            f"var_generate takes one unpadded prompt, got a batch of {prompt.shape[0]}: use "
            "var_generate_batch, which aligns the rows and lets each stop on its own."
        )
    if "batch_size" in options or "on_result" in options:
        raise TypeError("batch_size and on_result are var_generate_batch's options.")
    return var_generate_batch(
        model, [prompt.reshape(-1)], gen_length, block_length, steps, mask_id, batch_size=1,
        **options,
    )[0]  # fmt: skip
