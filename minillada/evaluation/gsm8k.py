"""GSM8K: grade-school maths word problems, graded by the final number of a written solution.

GSM8K (OpenAI's grade-school-math, MIT) asks questions such as "Janet's ducks lay 16 eggs per
day..." whose answer is one integer. Each reference answer is a worked solution, with calculator
annotations like ``<<48/2=24>>``, that ends on a line ``#### 72``. A model is not scored on its
reasoning: it writes a solution, a rule pulls one number out of that text, and the item counts as
solved when that number equals the reference one. So an evaluation is three choices, and a
reported accuracy means little without them:

* the prompt. A Base model (plain next-text prediction) is prompted few-shot, in lm-eval's
  ``gsm8k`` format: worked examples "Question: ...\\nAnswer: <solution>" and then the new
  question, so that it continues with a solution of the same shape (``few_shot_prompt``); it is
  stopped when it starts a new "Question:" (``BASE_STOP_STRINGS``). An Instruct model is asked
  0-shot, in a chat turn that spells out the expected format (``INSTRUCT_PROMPT``, the iLLaDA
  authors' prompt; ``instruct_messages``).
* the extraction rule. The strict rule takes the last ``#### <number>`` (``extract_answer``); for a
  reasoning model such as iLLaDA-8B-Instruct it looks only after the last ``</think>``, so that a
  number tried out while thinking is not graded. lm-eval also reports a flexible rule, the last
  number anywhere in the text (``flexible_answer``), which forgives a model that forgets ``####``.
* the comparison. Both numbers are normalised first (``normalise_number``: "$1,000." and "1000"
  are the same answer), then compared exactly (``is_correct``).

``score_answers`` grades a list of completions and returns a ``GSM8KScore``: the accuracy with its
95% Wilson interval (on 100 items, 41% correct means anything from about 32% to 51%), and how often
a number was found at all, which separates "wrong answers" from "answers in the wrong format".
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from minillada.data.chat import THINK_END, answer_after_thinking
from minillada.data.downloads import dataset_path
from minillada.estimate import wilson_interval


@dataclass(frozen=True)
class GSM8KItem:
    question: str
    solution: str  # the reference reasoning, '#### n' line included
    target: str  # the number after '####', normalised by normalise_number


# The iLLaDA authors' 0-shot prompt for Instruct models: it names the '####' line that
# extract_answer looks for, since a chat model has no examples to copy the format from.
INSTRUCT_PROMPT = (
    "Q: {question}\n\n"
    "A: Solve the problem step by step. At the end, write the final answer on a separate line in "
    "this exact format:\n#### <number>"
)

# lm-eval gsm8k's `until`: a Base model that has finished its solution goes on to invent the next
# "Question:", so generation stops there (or at an end-of-text token).
BASE_STOP_STRINGS = ("Question:", "</s>", "<|im_end|>")

# The iLLaDA authors' strict rule: '####', optional spaces, then a number that ends in a digit (so
# a full stop after it is not taken in).
_STRICT = re.compile(r"#### *(-?[$0-9.,]*[0-9]+)")
# lm-eval's flexible-extract: anything of two or more digits, '$', '.' and ',' (so "1,000" and
# "$18" are one number each), or else a lone integer.
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_ZERO_FRACTION = re.compile(r"\.0+$")


def normalise_number(text: str) -> str:
    """A number as written, reduced to a canonical form so that equal answers compare equal:
    strip spaces, drop ',' and '$' and one trailing '.', and drop a zero fraction, so that
    "$1,000." and "72.00" become "1000" and "72". A leading '-' is kept."""
    text = text.strip().replace(",", "").replace("$", "")
    if text.endswith("."):  # the full stop of a sentence, as in "The answer is 18."
        text = text[:-1]
    return _ZERO_FRACTION.sub("", text)


def load_gsm8k(path: str | Path | None = None, n: int | None = None) -> list[GSM8KItem]:
    """The first ``n`` items (all when None) of GSM8K's test split, from ``path`` or the verified
    download (``dataset_path("gsm8k_test")``); one JSON object per line, with "question" and
    "answer"."""
    if n is not None and n < 0:
        raise ValueError(f"Expected n >= 0 items (or None for all of them), got n={n}.")
    path = Path(path) if path is not None else dataset_path("gsm8k_test")
    items: list[GSM8KItem] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if n is not None and len(items) == n:
                break
            if not line.strip():
                continue  # a blank line (such as a final newline too many) holds no item
            items.append(_item_from_line(line, number, path))
    return items


def _item_from_line(line: str, number: int, path: Path) -> GSM8KItem:
    """One line of test.jsonl; the error names the line, so a damaged file can be inspected."""
    where = f"line {number} of {path}"
    expected = 'a JSON object {"question": ..., "answer": "...\\n#### <number>"}'
    try:
        doc = json.loads(line)
        question, solution = doc["question"], doc["answer"]
    except (json.JSONDecodeError, TypeError, KeyError) as error:
        raise ValueError(
            f"Expected {expected} on {where}, found {line[:200]!r} ({error}). Is this GSM8K's "
            "test.jsonl? Delete the file to download it again."
        ) from error
    if "####" not in solution:
        raise ValueError(
            f"Expected the answer on {where} to end with a '#### <number>' line, found "
            f"{solution[-200:]!r}. Is this GSM8K's test.jsonl? Delete the file to download it "
            "again."
        )
    return GSM8KItem(question, solution, normalise_number(solution.rsplit("####", 1)[-1]))


def instruct_messages(question: str) -> list[dict[str, str]]:
    """The chat for an Instruct model: one user turn holding ``INSTRUCT_PROMPT``. The chat template
    (special tokens, the assistant header) is the caller's tokenizer's to apply."""
    return [{"role": "user", "content": INSTRUCT_PROMPT.format(question=question)}]


def few_shot_prompt(question: str, shots: Sequence[GSM8KItem]) -> str:
    """lm-eval's ``gsm8k`` prompt for a Base model: each worked example as
    "Question: {q}\\nAnswer: {solution}\\n\\n", then "Question: {question}\\nAnswer:".

    The LLaDA and iLLaDA papers evaluate Base models few-shot; lm-eval draws the examples from
    GSM8K's train split. Only the test split is downloaded here, so the caller takes the examples
    from the test items and leaves them out of the scoring (``exemplars_and_items``): the scores
    are then over slightly fewer items, and are close to, not equal to, lm-eval's.
    """
    examples = "".join(f"Question: {s.question}\nAnswer: {s.solution}\n\n" for s in shots)
    return f"{examples}Question: {question}\nAnswer:"


def exemplars_and_items(
    items: Sequence[GSM8KItem], shots: int
) -> tuple[list[GSM8KItem], list[GSM8KItem]]:
    """The first ``shots`` items as few-shot examples, and the rest to score: an item shown with
    its solution in the prompt would be graded on a question whose answer the model was given."""
    if not 0 <= shots < len(items):
        raise ValueError(
            f"Expected 0 <= shots < len(items), got shots={shots} with {len(items)} items; "
            "load more items (load_gsm8k(n=...)) or ask for fewer shots, so that some are left "
            "to score."
        )
    return list(items[:shots]), list(items[shots:])


def extract_answer(text: str, think_end: str | None = THINK_END) -> str | None:
    """The iLLaDA authors' rule: the last ``#### <number>`` after the last ``think_end`` (in the
    whole text when it does not occur, or when ``think_end`` is None), normalised; None when there
    is no such line. A Base completion stops at "Question:", so there the last '####' is also
    lm-eval's strict match."""
    if think_end is not None:
        if not think_end:
            raise ValueError(
                "Expected think_end to be a marker such as '</think>', got an empty string; "
                "pass think_end=None to search the whole text."
            )
        text = answer_after_thinking(text, think_end)
    matches = _STRICT.findall(text)
    return normalise_number(matches[-1]) if matches else None


def flexible_answer(text: str) -> str | None:
    """lm-eval's flexible-extract: the last number in the text, normalised; None when there is none.

    As in lm-eval, the pattern also takes runs such as "..." that hold no digit, so a text that
    ends on an ellipsis yields "..", graded wrong; a run that normalises to nothing ("$") yields
    None."""
    matches = list(_FLEXIBLE.finditer(text))
    if not matches:
        return None
    answer = normalise_number(matches[-1].group(0))
    return answer or None


def is_correct(prediction: str | None, target: str) -> bool:
    """Exact match after ``normalise_number`` on both sides; no prediction (None) is wrong."""
    return prediction is not None and normalise_number(prediction) == normalise_number(target)


@dataclass
class GSM8KScore:
    correct: int
    n: int
    extracted: int  # answers where extract_answer found a number

    def __post_init__(self) -> None:
        if not (self.n >= 1 and 0 <= self.correct <= self.n and 0 <= self.extracted <= self.n):
            raise ValueError(
                f"Expected n >= 1 and 0 <= correct, extracted <= n, got correct={self.correct}, "
                f"extracted={self.extracted}, n={self.n}; score at least one answer."
            )

    @property
    def accuracy(self) -> float:
        """The fraction of items solved."""
        return self.correct / self.n

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson interval of the accuracy, as fractions: how far the accuracy on these
        n items could be from the accuracy on all such problems."""
        return wilson_interval(self.correct, self.n)

    def __str__(self) -> str:
        lo, hi = self.interval
        return (
            f"{100 * self.accuracy:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] of {self.n} "
            f"(a number found in {self.extracted})"
        )


def score_answers(
    texts: Sequence[str], items: Sequence[GSM8KItem], think_end: str | None = THINK_END
) -> GSM8KScore:
    """Grade completions against their items with ``extract_answer``: ``texts[i]`` answers
    ``items[i]``."""
    if len(texts) != len(items):
        raise ValueError(
            f"Expected one completion per item, got {len(texts)} texts for {len(items)} items; "
            "pass the items that were prompted (after exemplars_and_items, the scored ones)."
        )
    predictions = [extract_answer(text, think_end) for text in texts]
    pairs = zip(predictions, items, strict=True)  # the lengths were checked above
    return GSM8KScore(
        correct=sum(is_correct(p, item.target) for p, item in pairs),
        n=len(items),
        extracted=sum(p is not None for p in predictions),
    )
