"""One answer to one prompt, the way a practitioner asks for it: settings in, text and costs out.

``generate_answer`` runs either sampler on a prompt of token ids and returns what the evaluations
and the chat need: the answer's ids (up to the first stop id), its text (special tokens kept and
cut at the first stop string, as the authors' ``generate_until`` does, so that ``</think>`` is
never lost), the part after the last ``</think>``, and what it cost: forward passes, positions
computed, seconds, and on a GPU the peak memory.

The samplers' settings of the papers are named here, so that every caller uses the same ones:

* ``ILLADA_INSTRUCT``: iLLaDA's variable length, budget 2048, blocks of 32, 32 steps per block
  (one token per forward), temperature 0, end-of-thinking boost 100 with power 3 (GSM8K);
* ``ILLADA_BASE``: the same without the boost, budget 1024 (the Base model's generation tasks);
* ``LLADA_INSTRUCT``: LLaDA's fixed canvas of 256 masks, blocks of 32, 256 steps, temperature 0
  (Fast-dLLM's LLaDA baseline, 6.7 tokens/s on an A100 for GSM8K).

Tokens per second counts *output* tokens: the answer up to its first stop id (re-encoded after a
stop-string cut, as the authors' throughput does). ``computed_tokens`` counts the positions the
sampler denoised (whole blocks, or the whole canvas) and ``positions_processed`` the positions all
forward passes ran over (prompt included), which is what the GPU actually paid for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from minillada.data.chat import answer_after_thinking
from minillada.data.tokenizer import LLaDATokenizer
from minillada.runtime import model_device
from minillada.sampling.counting import CountedModel, counting_positions
from minillada.sampling.generate import generate
from minillada.sampling.variable_length import until_stop, var_generate, var_generate_batch


@dataclass
class GenerationSettings:
    """How an answer is generated (a chat turn, a benchmark item)."""

    gen_length: int = 128  # the canvas (fixed) or the budget (variable length)
    block_length: int = 32
    steps: int = 128  # in all for the fixed canvas; per block with variable_length
    temperature: float = 0.0
    variable_length: bool = False  # iLLaDA's block-after-block generation, stopping at EOS
    think_end_boost: float = 0.0  # iLLaDA-8B-Instruct's end-of-thinking boost (100 in the paper)
    think_end_power: float = 3.0
    threshold: float | None = None  # lesson 8: reveal every token this confident (steps unused)
    cache: str | None = None  # lesson 8: None, "prefix" or "dual" (approximate keys and values)

    def check(self, context: int | None = None, thinks: bool = True) -> None:
        """Raise ValueError, saying what to change, for settings the samplers would refuse (or
        that could not fit ``context`` tokens, or boost a ``</think>`` the model does not have);
        cheap, so callers run it before loading anything heavy."""
        G, b, steps = self.gen_length, self.block_length, self.steps
        problems = []
        if G < 1 or b < 1:
            problems.append(f"gen_length {G} and block_length {b} must be at least 1")
        elif G % b:
            problems.append(
                f"gen_length {G} is not a multiple of block_length {b}: the answer is made of "
                f"whole blocks (use {G // b * b or b})"
            )
        if self.threshold is None and b >= 1 and G >= b and not G % b:
            if steps is None or steps < 1:
                problems.append(f"steps must be at least 1, got {steps}")
            elif self.variable_length and steps > b:
                problems.append(
                    f"{steps} steps per block is more than the {b} masks of a block (every step "
                    f"reveals at least one token): use steps <= {b}, e.g. {b}"
                )
            elif not self.variable_length and (steps % (G // b) or steps > G):
                problems.append(
                    f"{steps} steps cannot be spread evenly over {G // b} blocks of {b} with at "
                    f"least one token per step: use a multiple of {G // b} up to {G}, e.g. {G}"
                )
        if self.threshold is not None and not 0 < self.threshold <= 1:
            problems.append(f"threshold {self.threshold} is not a probability in (0, 1]")
        if self.temperature < 0:
            problems.append(f"temperature {self.temperature} is negative")
        if self.think_end_boost < 0:
            problems.append(f"think_end_boost {self.think_end_boost} is negative")
        if self.think_end_boost > 0 and not self.variable_length:
            problems.append("the end-of-thinking boost works with variable_length only")
        if self.think_end_boost > 0 and not thinks:
            problems.append(
                "the end-of-thinking boost needs a model that closes its reasoning with "
                "</think>, and this tokenizer's model does not: set think_end_boost to 0"
            )
        if context is not None and b >= 1:
            room = G if not self.variable_length else b  # variable length clips the budget
            if room >= context:
                problems.append(
                    f"{'a canvas' if not self.variable_length else 'one block'} of {room} tokens "
                    f"leaves no room for a prompt in the model's context of {context} tokens"
                )
        if problems:
            raise ValueError(
                f"These generation settings cannot run ({self.describe()}): "
                + "; ".join(problems)
                + "."
            )

    def describe(self) -> str:
        if self.variable_length:
            text = (
                f"variable length, budget {self.gen_length}, blocks of {self.block_length}, "
                f"{self.steps} steps per block"
            )
        else:
            text = (
                f"fixed canvas of {self.gen_length}, blocks of {self.block_length}, "
                f"{self.steps} steps"
            )
        if self.threshold is not None:
            text = text.rsplit(", ", 1)[0] + f", threshold {self.threshold:g}"
        if self.cache is not None:
            text += f", {self.cache} cache"
        text += f", temperature {self.temperature:g}"
        if self.think_end_boost:
            text += (
                f", end-of-thinking boost {self.think_end_boost:g} power {self.think_end_power:g}"
            )
        return text


ILLADA_INSTRUCT = GenerationSettings(2048, 32, 32, variable_length=True, think_end_boost=100.0)
ILLADA_BASE = GenerationSettings(1024, 32, 32, variable_length=True)
LLADA_INSTRUCT = GenerationSettings(256, 32, 256)


@dataclass
class Answer:
    ids: torch.Tensor  # (n,) generated ids before the first stop id (no EOS, no padding)
    generated: torch.Tensor  # (G,) every generated id: whole blocks, or the whole canvas
    text: str  # decoded with special tokens kept, cut at the first stop string
    reply: str  # the text without special tokens, stripped
    final: str  # what follows the last </think> (the whole reply when there is none)
    forward_passes: int
    computed_tokens: int  # positions the sampler denoised (whole blocks, or the canvas)
    positions_processed: int  # sum over forward passes of the positions each one ran over
    output_tokens: int  # the answer's tokens (re-encoded after a stop-string cut, as the authors)
    seconds: float
    stopped: bool  # a stop id or string ended it (False: the budget ran out)
    peak_bytes: int | None  # peak GPU memory while generating; None on the CPU

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.seconds if self.seconds > 0 else float("inf")


def _cut(text: str, stop_strings) -> tuple[str, bool]:
    cut = False
    for stop in stop_strings:
        if stop in text:
            text, cut = text.split(stop, 1)[0], True
    return text, cut


def _answer(
    tokenizer: LLaDATokenizer,
    generated: torch.Tensor,
    stop_strings,
    *,
    passes: int,
    processed: int,
    seconds: float,
    stopped: bool,
    peak_bytes: int | None = None,
) -> Answer:
    """The Answer of ``generated`` (G,) ids: cut at the first stop id, decoded, cut at the first
    stop string."""
    generated = generated.cpu()
    ids = until_stop(generated, tokenizer.stop_ids)
    text, cut = _cut(tokenizer.decode(ids), stop_strings)
    return Answer(
        ids=ids,
        generated=generated,
        text=text,
        reply=tokenizer.strip_special(text),
        final=tokenizer.strip_special(answer_after_thinking(text)),
        forward_passes=passes,
        computed_tokens=len(generated),
        positions_processed=processed,
        output_tokens=len(tokenizer.encode(text)) if cut else len(ids),
        seconds=seconds,
        stopped=stopped or cut,
        peak_bytes=peak_bytes,
    )


def generate_answer(
    model: Callable,
    tokenizer: LLaDATokenizer,
    prompt_ids: torch.Tensor | list[int],
    settings: GenerationSettings,
    *,
    stop_strings: tuple[str, ...] | list[str] = (),
    generator: torch.Generator | None = None,
) -> Answer:
    """Answer one prompt (P,) or (1, P) with ``settings``; see the module docstring."""
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long).reshape(1, -1)
    s, stop_ids = settings, tokenizer.stop_ids
    device = model_device(model)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    prompt = prompt.to(device)
    if s.variable_length:  # the sampler counts each row's passes and positions itself
        result = var_generate(
            model, prompt, s.gen_length, s.block_length, s.steps, tokenizer.mask_id,
            generator=generator, **_variable_options(tokenizer, s, stop_strings),
        )  # fmt: skip
        generated, passes, stopped = result.generated, result.forward_passes, result.stopped
        processed = result.positions_processed
    else:
        counted = CountedModel(model)
        with counting_positions(model) as seen:
            canvas = generate(
                counted,
                prompt,
                s.gen_length,
                s.block_length,
                None if s.threshold is not None else s.steps,
                tokenizer.mask_id,
                temperature=s.temperature,
                generator=generator,
                threshold=s.threshold,
                cache=s.cache,
            )
        generated, passes = canvas[0, prompt.shape[1] :].cpu(), counted.calls
        stopped = bool(torch.isin(generated, torch.tensor(stop_ids)).any())
        # every pass runs over the prompt and the whole canvas (for a model without an embedding
        # to hook, counting_positions sees nothing)
        processed = sum(seen) or passes * canvas.shape[1]
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    return _answer(
        tokenizer, generated, stop_strings, passes=passes, processed=processed, seconds=seconds,
        stopped=stopped, peak_bytes=peak,
    )  # fmt: skip


def _variable_options(tokenizer: LLaDATokenizer, s: GenerationSettings, stop_strings) -> dict:
    """var_generate's options for ``settings``, the stop rules and the boost included."""
    return dict(
        stop_ids=tokenizer.stop_ids,
        stop_strings=list(stop_strings) or None,
        decode=tokenizer.decode,
        temperature=s.temperature,
        think_end_ids=tokenizer.think_end_ids if s.think_end_boost > 0 else None,
        think_end_boost=s.think_end_boost,
        think_end_power=s.think_end_power,
        threshold=s.threshold,
        cache=s.cache,
    )


def generate_answers(
    model: Callable,
    tokenizer: LLaDATokenizer,
    prompts: list[torch.Tensor | list[int]],
    settings: GenerationSettings,
    *,
    batch_size: int = 8,
    stop_strings: tuple[str, ...] | list[str] = (),
    on_answer: Callable[[int, Answer], None] | None = None,
) -> list[Answer]:
    """Answer every prompt of ``prompts``, ``batch_size`` rows per forward pass; at temperature 0
    each answer is the one ``generate_answer`` gives alone. Variable length: finished rows leave
    the batch and waiting prompts take their place (``var_generate_batch``); the fixed canvas:
    left-padded chunks of ``batch_size`` prompts. ``on_answer(index, answer)`` is called as each
    answer is done (in finishing order). An answer's ``seconds`` is its share of the batch's
    time (each step's time split over the rows it computed), so the answers' seconds add up to
    about the wall time.
    ``positions_processed`` counts the positions of the passes each row took part in, padding
    included."""
    s = settings
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (rows per forward), got {batch_size}.")
    answers: list[Answer | None] = [None] * len(prompts)

    def keep(index: int, answer: Answer) -> None:
        answers[index] = answer
        if on_answer is not None:
            on_answer(index, answer)

    if s.variable_length:

        def finished(index: int, result) -> None:
            keep(
                index,
                _answer(
                    tokenizer, result.generated, stop_strings, passes=result.forward_passes,
                    processed=result.positions_processed, seconds=result.seconds,
                    stopped=result.stopped,
                ),
            )  # fmt: skip

        var_generate_batch(
            model, prompts, s.gen_length, s.block_length, s.steps, tokenizer.mask_id,
            batch_size=batch_size, on_result=finished,
            **_variable_options(tokenizer, s, stop_strings),
        )  # fmt: skip
        return answers  # type: ignore[return-value]
    stop = torch.tensor(tokenizer.stop_ids)
    for first in range(0, len(prompts), batch_size):
        chunk = [torch.as_tensor(p).reshape(-1).tolist() for p in prompts[first:][:batch_size]]
        if len(chunk) == 1:
            keep(first, generate_answer(model, tokenizer, chunk[0], s, stop_strings=stop_strings))
            continue
        padded = tokenizer.pad_left(chunk)
        start = time.perf_counter()
        counted = CountedModel(model)
        with counting_positions(model) as seen:
            canvas = generate(
                counted,
                padded.input_ids,
                s.gen_length,
                s.block_length,
                None if s.threshold is not None else s.steps,
                tokenizer.mask_id,
                temperature=s.temperature,
                attention_mask=padded.attention_mask,
                pad_id=tokenizer.pad_id,
                threshold=s.threshold,
                cache=s.cache,
            )
        seconds = time.perf_counter() - start
        P = padded.input_ids.shape[1]
        for b, _ in enumerate(chunk):
            generated = canvas[b, P:].cpu()
            keep(
                first + b,
                _answer(
                    tokenizer, generated, stop_strings, passes=counted.calls,
                    processed=sum(seen) // len(chunk), seconds=seconds / len(chunk),
                    stopped=bool(torch.isin(generated, stop).any()),
                ),
            )  # fmt: skip
    return answers  # type: ignore[return-value]
