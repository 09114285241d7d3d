"""HellaSwag validation items, prepared as lm-eval prepares them (lesson 7's multiple choice).

The file is rowanz/hellaswag's ``data/hellaswag_val.jsonl`` (MIT; 10,042 items), fetched through
``minillada.data.downloads`` and verified by its git blob id. Each line holds ``activity_label``,
``ctx_a``, ``ctx_b``, four ``endings`` and the ``label`` of the right one. lm-eval's HellaSwag task,
which both LLaDA's and iLLaDA's evaluations run, turns a line into

* the context ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``,
* four options ``preprocess(ending)``, each scored as the continuation ``" " + option``,

where ``preprocess`` strips the text, turns WikiHow's " [title]" into ". ", deletes any other
``[...]`` marker and folds double spaces. The reported metric is the length-normalised choice
(``acc_norm``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from minillada.data.downloads import dataset_path


@dataclass(frozen=True)
class HellaSwagItem:
    context: str
    options: list[str]  # four endings, each scored as " " + option after the context
    label: int  # index of the right ending


def preprocess(text: str) -> str:
    """lm-eval's clean-up of HellaSwag text (brackets are WikiHow artefacts)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def item_from_line(line: str) -> HellaSwagItem:
    """One line of hellaswag_val.jsonl as lm-eval prepares it."""
    doc = json.loads(line)
    context = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    options = [preprocess(e) for e in doc["endings"]]
    if len(options) != 4 or not 0 <= int(doc["label"]) < 4:
        raise ValueError(f"Expected four endings and a label in 0..3, got {line[:200]!r}")
    return HellaSwagItem(
        preprocess(doc["activity_label"] + ": " + context), options, int(doc["label"])
    )


def load_hellaswag(path: str | Path | None = None, n: int | None = None) -> list[HellaSwagItem]:
    """The first ``n`` (all when None) validation items, from ``path`` or the verified download."""
    path = Path(path) if path is not None else dataset_path("hellaswag_val")
    items = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                items.append(item_from_line(line))
            if n is not None and len(items) == n:
                break
    return items
