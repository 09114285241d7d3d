"""GSM8K and HellaSwag on a loaded model, as the papers ran them, on n items or all of them.

``run_gsm8k`` generates one answer per question with the sampler settings given (the papers' are
``minillada.sampling.answer.ILLADA_INSTRUCT`` / ``ILLADA_BASE``) and grades it with
``minillada.evaluation.gsm8k``:

* an Instruct model is asked 0-shot through its own chat template with the authors' prompt, and
  graded on the last ``#### n`` after the last ``</think>``;
* a Base model continues a few-shot prompt in lm-eval's format and is stopped at the next
  "Question:". Only GSM8K's test split is here, so the exemplars are the first test items, which
  are then not scored (lm-eval takes them from the train split).

``run_hellaswag`` scores the four endings of each item two ways on the same items: iLLaDA's
confidence score (deterministic, one forward per answer token) and LLaDA's Monte Carlo likelihood
(lesson 3's estimator), each reported raw ("acc") and divided by the ending's length in characters
("acc_norm", lm-eval's HellaSwag metric).

Both run through ``minillada.evaluation.parallel.evaluate_sharded``: under ``torchrun`` every
process scores its share of the items and the results are gathered once; alone, the same code
scores everything. Every result carries its 95% Wilson interval, the wall time and the work done,
so that "how long would the full benchmark take" is a division away.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from minillada.checkpoints.released import LoadedModel
from minillada.estimate import wilson_interval
from minillada.evaluation.gsm8k import (
    BASE_STOP_STRINGS,
    GSM8KItem,
    GSM8KScore,
    few_shot_prompt,
    instruct_messages,
    score_answers,
)
from minillada.evaluation.hellaswag import HellaSwagItem
from minillada.evaluation.multiple_choice import choose_text, confidence_scorer, mdm_scorer
from minillada.evaluation.parallel import evaluate_sharded
from minillada.sampling.answer import GenerationSettings, generate_answer


@dataclass(frozen=True)
class GeneratedItem:
    """One GSM8K answer, small enough to gather across processes."""

    text: str  # what was graded (special tokens kept, cut at the stop strings)
    forward_passes: int
    computed_tokens: int
    output_tokens: int
    seconds: float


@dataclass
class GenerationRun:
    model: str
    settings: str
    score: GSM8KScore
    items: list[GeneratedItem] = field(repr=False)
    wall_seconds: float  # the whole run, all processes

    @property
    def seconds(self) -> float:
        """Generation time summed over the items (one GPU's worth of work)."""
        return sum(i.seconds for i in self.items)

    @property
    def tokens_per_second(self) -> float:
        return sum(i.output_tokens for i in self.items) / self.seconds

    @property
    def forward_passes(self) -> int:
        return sum(i.forward_passes for i in self.items)

    def summary(self) -> str:
        n = len(self.items)
        out = sum(i.output_tokens for i in self.items)
        return (
            f"{self.model}: GSM8K {self.score}\n"
            f"  {self.settings}\n"
            f"  {self.seconds:.1f} s of generation for {n} items ({self.seconds / n:.2f} s each), "
            f"{out / n:.0f} output tokens and {self.forward_passes / n:.0f} forward passes per "
            f"item, {self.tokens_per_second:.1f} tokens/s"
        )


def gsm8k_prompt(loaded: LoadedModel, question: str, shots: Sequence[GSM8KItem] = ()) -> list[int]:
    """The prompt ids of one question: the chat template for an Instruct model (0-shot), the
    few-shot text for a Base model."""
    if loaded.instruct:
        if shots:
            raise ValueError("The Instruct model is evaluated 0-shot in the chat; pass no shots.")
        return loaded.chat_prompt(instruct_messages(question))
    if not shots:
        raise ValueError(
            "A Base model is evaluated few-shot: pass shots (exemplars_and_items(items, k))."
        )
    return loaded.tokenizer.encode(few_shot_prompt(question, shots))


def run_gsm8k(
    loaded: LoadedModel,
    items: Sequence[GSM8KItem],
    settings: GenerationSettings,
    shots: Sequence[GSM8KItem] = (),
    progress: bool = False,
) -> GenerationRun:
    """Answer and grade ``items``; see the module docstring."""
    tok = loaded.tokenizer
    stops = () if loaded.instruct else BASE_STOP_STRINGS
    think_end = "</think>" if loaded.instruct and loaded.report.think_end_ids is not None else None

    def one(item: GSM8KItem) -> GeneratedItem:
        prompt = gsm8k_prompt(loaded, item.question, shots)
        answer = generate_answer(loaded.model, tok, prompt, settings, stop_strings=stops)
        return GeneratedItem(
            answer.text,
            answer.forward_passes,
            answer.computed_tokens,
            answer.output_tokens,
            answer.seconds,
        )

    start = time.perf_counter()
    generated = evaluate_sharded(one, list(items), progress=progress)
    wall = time.perf_counter() - start
    score = score_answers([g.text for g in generated], items, think_end=think_end)
    setting = (
        ("0-shot chat" if loaded.instruct else f"{len(shots)}-shot") + ", " + (settings.describe())
    )
    return GenerationRun(loaded.name, setting, score, generated, wall)


# --------------------------------------------------------------------------------------------------
# HellaSwag
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChoiceItem:
    raw_choice: int
    normalised_choice: int
    seconds: float


@dataclass
class ChoiceRun:
    model: str
    method: str
    labels: list[int] = field(repr=False)
    items: list[ChoiceItem] = field(repr=False)
    wall_seconds: float

    @property
    def n(self) -> int:
        return len(self.items)

    @property
    def correct(self) -> int:
        return sum(i.raw_choice == y for i, y in zip(self.items, self.labels, strict=True))

    @property
    def correct_norm(self) -> int:
        return sum(i.normalised_choice == y for i, y in zip(self.items, self.labels, strict=True))

    @property
    def seconds(self) -> float:
        return sum(i.seconds for i in self.items)

    def line(self) -> str:
        def pct(k: int) -> str:
            lo, hi = wilson_interval(k, self.n)
            return f"{100 * k / self.n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"

        return (
            f"{self.method:<24} acc {pct(self.correct)}  acc_norm {pct(self.correct_norm)}  "
            f"{self.seconds / self.n:.2f} s per item"
        )


def hellaswag_encoder(loaded: LoadedModel, add_bos: bool):
    """lm-eval's encoding of a HellaSwag context (with the authors' ``add_bos_token``)."""
    tok = loaded.tokenizer
    if add_bos:
        return lambda text: [tok.bos_id, *tok.encode(text)]
    return tok.encode


def run_hellaswag(
    loaded: LoadedModel,
    items: Sequence[HellaSwagItem],
    method: str = "confidence",
    *,
    add_bos: bool = True,
    padd_eos: bool = True,
    mc_num: int = 128,
    batch_size: int = 32,
    progress: bool = False,
) -> ChoiceRun:
    """Score ``items`` by ``method``: "confidence" (iLLaDA's, with ``padd_eos`` and BOS as the
    authors run it) or "mc" (LLaDA's Monte Carlo likelihood, ``mc_num`` samples)."""
    if method == "confidence":
        eos = loaded.tokenizer.eos_id if padd_eos else None
        scorer = confidence_scorer(loaded.model, loaded.tokenizer.mask_id, eos)
        label = "confidence" + (" (padd_eos)" if padd_eos else "")
    elif method == "mc":
        scorer = mdm_scorer(loaded.model, loaded.tokenizer.mask_id, mc_num, batch_size)
        label = f"Monte Carlo ({mc_num} samples)"
    else:
        raise ValueError(f"method must be 'confidence' or 'mc', got {method!r}.")
    encode = hellaswag_encoder(loaded, add_bos)

    def one(item: HellaSwagItem) -> ChoiceItem:
        start = time.perf_counter()
        result = choose_text(scorer, encode, item.context, [" " + o for o in item.options])
        seconds = time.perf_counter() - start
        return ChoiceItem(result.raw_choice, result.normalised_choice, seconds)

    start = time.perf_counter()
    scored = evaluate_sharded(one, list(items), progress=progress)
    wall = time.perf_counter() - start
    return ChoiceRun(loaded.name, label, [i.label for i in items], scored, wall)
