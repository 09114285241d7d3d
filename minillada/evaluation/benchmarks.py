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
process scores its share of the items; alone, the same code scores everything. Given
``results=PATH`` a run survives being killed: each finished item is appended to that JSON-lines
file (``minillada.evaluation.results_file``) under a fingerprint of the model, the settings, the
task and the items (``gsm8k_fingerprint``, ``hellaswag_fingerprint``); the same call again skips
the items already there and refuses a file written with anything else; under ``torchrun`` each
rank writes its own file and no collective waits on the others. The run returned is always
computed from the results as the file holds them (``gsm8k_run_from_results``,
``hellaswag_run_from_results``), so a resumed run reports what an uninterrupted one does.

With ``progress=True`` the bar stays on screen with items/s and the accuracy so far, and after the
first items one line gives the expected minutes for the requested items and for the whole set
(GSM8K: 1,319 problems; HellaSwag: 10,042 items) at that rate. Every result carries its 95% Wilson
interval, the wall time and the work done.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from minillada.checkpoints.released import LoadedModel
from minillada.estimate import wilson_interval
from minillada.evaluation.gsm8k import (
    BASE_STOP_STRINGS,
    GSM8KItem,
    GSM8KScore,
    extract_answer,
    few_shot_prompt,
    instruct_messages,
    is_correct,
    score_answers,
)
from minillada.evaluation.hellaswag import HellaSwagItem
from minillada.evaluation.multiple_choice import choose_text, confidence_scorer, mdm_scorer
from minillada.evaluation.parallel import Display, ResultsStore, evaluate_sharded
from minillada.evaluation.results_file import (
    ResultsFileError,
    digest,
    fingerprint_differences,
    snapshot_fingerprint,
)
from minillada.sampling.answer import Answer, GenerationSettings, generate_answer, generate_answers

GSM8K_TEST_SIZE = 1319  # problems in GSM8K's test split (the forecast's "whole set")
HELLASWAG_VAL_SIZE = 10042  # items in HellaSwag's validation split
WAIT_SECONDS = 6 * 3600.0  # under torchrun, how long the end of a run waits for the other ranks
T = TypeVar("T")


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """``cls(**data)`` for a result dataclass, with an error that names the fields that do not
    match (a results file from another version of minillada)."""
    names = {f.name for f in fields(cls)}
    if set(data) != names:
        raise ValueError(
            f"Expected a {cls.__name__} with fields {sorted(names)}, found {sorted(data)}: the "
            "results file was written by another version of minillada; rerun into a new file."
        )
    return cls(**data)


@dataclass(frozen=True)
class GeneratedItem:
    """One GSM8K answer, small enough to gather across processes."""

    text: str  # what was graded (special tokens kept, cut at the stop strings)
    forward_passes: int
    computed_tokens: int
    output_tokens: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The item as JSON values (one line of a results file)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratedItem:
        return _from_dict(cls, data)


@dataclass
class GenerationRun:
    model: str
    settings: str
    score: GSM8KScore
    items: list[GeneratedItem] = field(repr=False)
    wall_seconds: float  # this call, all processes (a resumed run: only the part it ran)
    fingerprint: dict | None = field(default=None, repr=False)  # what produced the results
    results: Path | None = None  # the results file, when the run kept one

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


def sampler_kind(settings: GenerationSettings) -> str:
    """Whether ``settings`` run the papers' sampler, "exact" (every pass recomputes every
    position, tokens revealed by the step schedule), or lesson 8's "approximate" one: a cache
    (stale keys and values) or threshold decoding, faster, with answers that may differ."""
    return "exact" if settings.cache is None and settings.threshold is None else "approximate"


def settings_record(settings: GenerationSettings) -> dict[str, Any]:
    """Every field of ``settings``, its description and whether the sampler is exact: what a
    result names so that it can be rerun."""
    return {"sampler": sampler_kind(settings), "describe": settings.describe(), **asdict(settings)}


def model_fingerprint(loaded: LoadedModel) -> dict[str, Any]:
    """The model's name, dtype and digests of its snapshot (``snapshot_fingerprint``)."""
    dtype = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
    return {"name": loaded.name, "dtype": dtype, **snapshot_fingerprint(loaded.report.folder)}


def items_fingerprint(items: Sequence[GSM8KItem] | Sequence[HellaSwagItem]) -> dict[str, Any]:
    """How many items and a digest of their contents, in order."""
    return {"n": len(items), "digest": digest([asdict(item) for item in items])}


def check_items(fingerprint: dict, items: Sequence) -> None:
    """Raise ResultsFileError when ``items`` are not the items whose results ``fingerprint``
    heads: results are never graded against other items than the ones they answer."""
    here = {"data": items_fingerprint(items)}
    differences = fingerprint_differences(here, {"data": fingerprint["data"]})
    if differences:
        raise ResultsFileError(
            "These results answer other items: " + "; ".join(differences) + ". Load the items "
            "of that run (cli.evaluate: the same --data, --limit and --shots)."
        )


def gsm8k_fingerprint(
    loaded: LoadedModel,
    items: Sequence[GSM8KItem],
    settings: GenerationSettings,
    shots: Sequence[GSM8KItem] = (),
    batch_size: int = 1,
) -> dict[str, Any]:
    """What a GSM8K run's results depend on: the model, every sampler setting, the prompt and the
    grading rule, and the items. The batch size too: at temperature 0 a batched row gives its
    batch-1 answer in exact arithmetic, but bf16 kernels round a batch differently, so a run is
    never resumed at another batch size."""
    instruct_thinks = loaded.instruct and loaded.report.think_end_ids is not None
    task = {
        "name": "gsm8k",
        "prompt": "0-shot chat" if loaded.instruct else f"{len(shots)}-shot",
        "shots": items_fingerprint(shots),
        "stop_strings": [] if loaded.instruct else list(BASE_STOP_STRINGS),
        "think_end": "</think>" if instruct_thinks else None,  # graded after the last one
    }
    return {
        "model": model_fingerprint(loaded),
        "settings": {**settings_record(settings), "batch_size": batch_size},
        "task": task,
        "data": items_fingerprint(items),
    }


def gsm8k_run_from_results(
    fingerprint: dict,
    items: Sequence[GSM8KItem],
    generated: Sequence[GeneratedItem],
    wall_seconds: float = 0.0,
    results: Path | None = None,
) -> GenerationRun:
    """The graded run of ``generated`` (the answers a results file holds, in item order)."""
    check_items(fingerprint, items)
    task = fingerprint["task"]
    score = score_answers([g.text for g in generated], items, think_end=task["think_end"])
    setting = f"{task['prompt']}, {fingerprint['settings']['describe']}"
    batch = fingerprint["settings"].get("batch_size", 1)
    setting += f", {batch} prompts per pass" if batch > 1 else ""
    model = fingerprint["model"]["name"]
    return GenerationRun(model, setting, score, list(generated), wall_seconds, fingerprint, results)


def run_gsm8k(
    loaded: LoadedModel,
    items: Sequence[GSM8KItem],
    settings: GenerationSettings,
    shots: Sequence[GSM8KItem] = (),
    progress: bool = False,
    *,
    batch_size: int = 1,
    results: str | Path | None = None,
    wait_seconds: float = WAIT_SECONDS,
) -> GenerationRun:
    """Answer and grade ``items``, ``batch_size`` prompts per forward pass (``generate_answers``:
    finished rows leave, waiting prompts join); with ``results``, keep every answer in that file
    as it is done and resume from it (see the module docstring)."""
    gsm8k_prompt(loaded, "", shots)  # shots that do not suit the model: refused before any work
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (rows per forward), got {batch_size}.")
    tok = loaded.tokenizer
    stops = () if loaded.instruct else BASE_STOP_STRINGS
    fingerprint = gsm8k_fingerprint(loaded, items, settings, shots, batch_size)
    think_end = fingerprint["task"]["think_end"]
    items = list(items)

    def graded(answer: Answer) -> GeneratedItem:
        return GeneratedItem(
            answer.text,
            answer.forward_passes,
            answer.computed_tokens,
            answer.output_tokens,
            answer.seconds,
        )

    def one(item: GSM8KItem) -> GeneratedItem:
        prompt = gsm8k_prompt(loaded, item.question, shots)
        return graded(generate_answer(loaded.model, tok, prompt, settings, stop_strings=stops))

    def many(todo: Sequence[GSM8KItem], keep) -> None:
        prompts = [gsm8k_prompt(loaded, item.question, shots) for item in todo]
        generate_answers(
            loaded.model, tok, prompts, settings, batch_size=batch_size, stop_strings=stops,
            on_answer=lambda k, answer: keep(k, graded(answer)),
        )  # fmt: skip

    def right(index: int, generated: GeneratedItem) -> bool:
        return is_correct(extract_answer(generated.text, think_end), items[index].target)

    display = Display("GSM8K", GSM8K_TEST_SIZE - len(shots), "GSM8K problems", correct=right)
    store = None
    if results is not None:
        store = ResultsStore(
            Path(results),
            fingerprint,
            GeneratedItem.to_dict,
            GeneratedItem.from_dict,
            wait_seconds=wait_seconds,
        )
    start = time.perf_counter()
    generated = evaluate_sharded(
        one, items, progress=progress, display=display, store=store,
        batch_fn=many if batch_size > 1 else None,
    )  # fmt: skip
    wall = time.perf_counter() - start
    kept = None if store is None else store.path
    return gsm8k_run_from_results(fingerprint, items, generated, wall, kept)


# --------------------------------------------------------------------------------------------------
# HellaSwag
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChoiceItem:
    raw_choice: int
    normalised_choice: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The item as JSON values (one line of a results file)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChoiceItem:
        return _from_dict(cls, data)


@dataclass
class ChoiceRun:
    model: str
    method: str
    labels: list[int] = field(repr=False)
    items: list[ChoiceItem] = field(repr=False)
    wall_seconds: float  # this call, all processes (a resumed run: only the part it ran)
    fingerprint: dict | None = field(default=None, repr=False)  # what produced the results
    results: Path | None = None  # the results file, when the run kept one

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


def hellaswag_fingerprint(
    loaded: LoadedModel,
    items: Sequence[HellaSwagItem],
    method: str = "confidence",
    *,
    add_bos: bool = True,
    padd_eos: bool = True,
    mc_num: int = 128,
    batch_size: int = 32,
) -> dict[str, Any]:
    """What a HellaSwag run's choices depend on: the model, the scorer with its options, and the
    items."""
    if method == "confidence":
        scorer = {"padd_eos": padd_eos, "label": "confidence" + (" (padd_eos)" if padd_eos else "")}
    elif method == "mc":  # the batch changes the rounding of the Monte Carlo sums
        scorer = {"mc_num": mc_num, "batch_size": batch_size, "seed": 0}
        scorer["label"] = f"Monte Carlo ({mc_num} samples)"
    else:
        raise ValueError(f"method must be 'confidence' or 'mc', got {method!r}.")
    return {
        "model": model_fingerprint(loaded),
        "task": {"name": "hellaswag", "method": method, "add_bos": add_bos, **scorer},
        "data": items_fingerprint(items),
    }


def hellaswag_run_from_results(
    fingerprint: dict,
    items: Sequence[HellaSwagItem],
    scored: Sequence[ChoiceItem],
    wall_seconds: float = 0.0,
    results: Path | None = None,
) -> ChoiceRun:
    """The run of ``scored`` (the choices a results file holds, in item order)."""
    check_items(fingerprint, items)
    model, label = fingerprint["model"]["name"], fingerprint["task"]["label"]
    labels = [item.label for item in items]
    return ChoiceRun(model, label, labels, list(scored), wall_seconds, fingerprint, results)


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
    results: str | Path | None = None,
    wait_seconds: float = WAIT_SECONDS,
) -> ChoiceRun:
    """Score ``items`` by ``method``: "confidence" (iLLaDA's, with ``padd_eos`` and BOS as the
    authors run it) or "mc" (LLaDA's Monte Carlo likelihood, ``mc_num`` samples); with
    ``results``, keep every choice in that file as it is made and resume from it."""
    options = dict(add_bos=add_bos, padd_eos=padd_eos, mc_num=mc_num, batch_size=batch_size)
    fingerprint = hellaswag_fingerprint(loaded, items, method, **options)
    if method == "confidence":
        eos = loaded.tokenizer.eos_id if padd_eos else None
        scorer = confidence_scorer(loaded.model, loaded.tokenizer.mask_id, eos)
    else:
        scorer = mdm_scorer(loaded.model, loaded.tokenizer.mask_id, mc_num, batch_size)
    encode = hellaswag_encoder(loaded, add_bos)
    items = list(items)

    def one(item: HellaSwagItem) -> ChoiceItem:
        start = time.perf_counter()
        result = choose_text(scorer, encode, item.context, [" " + o for o in item.options])
        seconds = time.perf_counter() - start
        return ChoiceItem(result.raw_choice, result.normalised_choice, seconds)

    def right(index: int, choice: ChoiceItem) -> bool:
        return choice.raw_choice == items[index].label

    display = Display("HellaSwag", HELLASWAG_VAL_SIZE, "HellaSwag items", correct=right)
    store = None
    if results is not None:
        store = ResultsStore(
            Path(results),
            fingerprint,
            ChoiceItem.to_dict,
            ChoiceItem.from_dict,
            wait_seconds=wait_seconds,
        )
    start = time.perf_counter()
    scored = evaluate_sharded(one, items, progress=progress, display=display, store=store)
    wall = time.perf_counter() - start
    kept = None if store is None else store.path
    return hellaswag_run_from_results(fingerprint, items, scored, wall, kept)
