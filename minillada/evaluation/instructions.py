"""Lesson 6's evaluation: an instruct model answers held-out instructions, graded by exact match.

Each answer is generated one of two ways with the same per-token effort (one token revealed per
forward pass) and the same budget of ``gen_length`` tokens:

* ``"fixed"``: LLaDA's canvas, ``generate`` with ``gen_length`` masks and ``steps = gen_length``
  in semi-autoregressive blocks of ``block_length``; every answer costs ``gen_length`` passes.
* ``"variable"``: iLLaDA's ``var_generate``, one block of ``block_length`` masks at a time with
  ``steps = block_length`` per block, stopping after the block that holds a stop id.

Either way the answer is the text before the first stop id (EOS or <|eot_id|>), special tokens
dropped and stripped; "stopped" means a stop id appeared within the budget.

Shapes: P = prompt tokens, G = gen_length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from minillada.data.instructions import TASKS, Example, encode_example
from minillada.estimate import wilson_interval
from minillada.evaluation.rewards import exact_match
from minillada.runtime import progress_bar
from minillada.sampling.answer import GenerationSettings, generate_answers
from minillada.sampling.generate import generate
from minillada.sampling.variable_length import until_stop, var_generate_batch

SAMPLERS = ("fixed", "variable")


@dataclass(frozen=True)
class Answer:
    """One generated answer and what it cost."""

    example: Example
    text: str  # the decoded answer, cut at the first stop id
    tokens: int  # answer tokens before the first stop id
    reference_tokens: int  # tokens of the reference answer (its end of turn not counted)
    stopped: bool  # a stop id appeared within the budget
    forward_passes: int
    seconds: float = 0.0  # wall time of the generation
    positions: int = 0  # positions all forward passes ran over (the work, without timing noise)

    @property
    def correct(self) -> bool:
        return bool(exact_match(self.text, self.example.answer))  # lesson 9's reward too


@torch.no_grad()
def answer_instruction(
    model,
    tokenizer,
    example: Example,
    sampler: str = "variable",
    gen_length: int = 32,
    block_length: int = 8,
    threshold: float | None = None,
    cache: str | None = None,
) -> Answer:
    """Generate the answer to ``example`` at temperature 0 with ``sampler`` ("fixed" or
    "variable", see the module docstring); one token per step, or with ``threshold`` every token
    whose confidence reaches it, with an optional approximate ``cache`` (lesson 8)."""
    return answer_instructions(
        model, tokenizer, [example], sampler, gen_length, block_length, threshold, cache, 1
    )[0]


def _graded(tokenizer, example: Example, generated: torch.Tensor, **cost) -> Answer:
    """The Answer of ``generated`` (G,) ids: cut at the first stop id, decoded without specials."""
    _, reference_ids = encode_example(tokenizer, example)  # the reference ends with EoT
    answer = until_stop(generated.cpu(), tokenizer.stop_ids)
    stopped = len(answer) < len(generated)  # a stop id was found (and cut off)
    text = tokenizer.decode(answer, skip_special_tokens=True).strip()
    return Answer(example, text, len(answer), len(reference_ids) - 1, stopped, **cost)


@torch.no_grad()
def answer_instructions(
    model,
    tokenizer,
    examples: Sequence[Example],
    sampler: str = "variable",
    gen_length: int = 32,
    block_length: int = 8,
    threshold: float | None = None,
    cache: str | None = None,
    batch_size: int = 8,
) -> list[Answer]:
    """``answer_instruction`` for every example, ``batch_size`` prompts per forward pass: at
    temperature 0 each answer is the one it gets alone. "variable": finished rows leave the batch
    and waiting prompts take their place (``var_generate_batch``); "fixed": left-padded chunks of
    ``batch_size`` (``minillada.sampling.answer.generate_answers``). An answer's ``seconds`` is
    its share of the batch's time (each step's time split over the rows it computed);
    ``positions`` counts the positions of the passes it took part in, padding included."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
    variable = sampler == "variable"  # one token per step: block_length steps per block, or G
    settings = GenerationSettings(
        gen_length, block_length, block_length if variable else gen_length,
        variable_length=variable, threshold=threshold, cache=cache,
    )  # fmt: skip
    prompts = [encode_example(tokenizer, e)[0] for e in examples]
    answers = generate_answers(model, tokenizer, prompts, settings, batch_size=batch_size)
    return [
        _graded(
            tokenizer, e, a.generated, forward_passes=a.forward_passes, seconds=a.seconds,
            positions=a.positions_processed,
        )  # fmt: skip
        for e, a in zip(examples, answers, strict=True)
    ]


@dataclass
class TaskScore:
    """Exact-match accuracy of one task, with its 95% Wilson interval."""

    task: str
    answers: list[Answer] = field(default_factory=list)

    @property
    def correct(self) -> int:
        return sum(a.correct for a in self.answers)

    @property
    def n(self) -> int:
        return len(self.answers)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    @property
    def stop_rate(self) -> float:
        return sum(a.stopped for a in self.answers) / self.n

    @property
    def mean_forward_passes(self) -> float:
        return sum(a.forward_passes for a in self.answers) / self.n

    @property
    def seconds(self) -> float:
        return sum(a.seconds for a in self.answers)

    @property
    def mean_positions(self) -> float:
        return sum(a.positions for a in self.answers) / self.n

    def record(self, lengths: bool = False) -> dict:
        """The score as JSON-ready numbers; ``lengths`` adds every answer's and reference's token
        count (for a figure of generated against reference length)."""
        out = {
            "correct": self.correct,
            "n": self.n,
            "accuracy": self.accuracy,
            "interval95": list(self.interval),
            "stop_rate": self.stop_rate,
            "mean_forward_passes": self.mean_forward_passes,
        }
        if lengths:
            out["answer_tokens"] = [a.tokens for a in self.answers]
            out["reference_tokens"] = [a.reference_tokens for a in self.answers]
        return out

    def __str__(self) -> str:
        lo, hi = self.interval
        return (
            f"{self.task:8s} {self.accuracy:6.1%} [{lo:5.1%}, {hi:5.1%}] ({self.correct}/{self.n})"
            f"  stops {self.stop_rate:6.1%}  passes {self.mean_forward_passes:5.1f}"
        )


def evaluate_instructions(
    model,
    tokenizer,
    examples: Sequence[Example],
    sampler: str = "variable",
    gen_length: int = 32,
    block_length: int = 8,
    progress: bool = True,
    threshold: float | None = None,
    cache: str | None = None,
    batch_size: int = 1,
) -> dict[str, TaskScore]:
    """Answer every example (``answer_instruction``, or ``answer_instructions`` when
    ``batch_size`` > 1) and score each task, plus "all"."""
    scores = {task: TaskScore(task) for task in (*TASKS, "all")}
    if batch_size > 1:
        answers = answer_instructions(
            model, tokenizer, examples, sampler, gen_length, block_length, threshold, cache,
            batch_size,
        )  # fmt: skip
    else:
        bar = progress_bar(examples, desc=sampler, leave=False, disable=not progress)
        answers = [
            answer_instruction(
                model, tokenizer, example, sampler, gen_length, block_length, threshold, cache
            )
            for example in bar
        ]
    for example, a in zip(examples, answers, strict=True):
        scores[example.task].answers.append(a)
        scores["all"].answers.append(a)
    return {task: s for task, s in scores.items() if s.answers}


@torch.no_grad()
def sampled_grades(
    model,
    tokenizer,
    examples: Sequence[Example],
    k: int,
    temperature: float,
    gen_length: int = 32,
    block_length: int = 8,
    seed: int = 0,
    sampler: str = "fixed",
) -> list[list[bool]]:
    """k sampled answers per example at ``temperature`` (one token per step), each graded by
    exact match: the raw material of pass@k and of RL's headroom. ``sampler``: ``"fixed"`` (the
    canvas) or ``"variable"`` (iLLaDA's block-at-a-time sampler, as the RL rollouts of
    ``--sampler variable`` draw them). The draws come from one generator seeded once, so a run is
    repeatable. Temperature 0 with k = 1 is greedy."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    g = torch.Generator().manual_seed(seed)
    out = []
    for e in examples:
        prompt = encode_example(tokenizer, e)[0]
        if sampler == "variable":
            results = var_generate_batch(
                model, [prompt] * k, gen_length, block_length, block_length, tokenizer.mask_id,
                batch_size=k, stop_ids=tokenizer.stop_ids, temperature=temperature, generator=g,
            )  # fmt: skip
            answers = [r.generated for r in results]
        else:
            canvas = generate(model, torch.tensor([prompt] * k), gen_length, block_length,
                              gen_length, tokenizer.mask_id, temperature=temperature,
                              generator=g)  # fmt: skip
            answers = list(canvas[:, len(prompt) :])  # k of (G,)
        out.append([
            bool(exact_match(tokenizer.decode(until_stop(r, tokenizer.stop_ids), True), e.answer))
            for r in answers
        ])  # fmt: skip
    return out
