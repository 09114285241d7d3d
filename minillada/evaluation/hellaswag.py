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


# Four items written by the course in hellaswag_val.jsonl's exact format (they are NOT HellaSwag):
# what lesson 7 scores where the real file cannot be fetched, and what the tests read.
FORMAT_EXAMPLES = (
    ("Cooking", "A man puts a pot of water on the stove.", "He",
     ["waits for the water to boil.", "paints the pot blue.", "throws the stove away.",
      "sings to the fish."], 0),
    ("Sports", "A girl runs toward the high bar.", "She",
     ["eats a sandwich on the bar.", "jumps and clears the bar.", "reads the bar aloud.",
      "folds the bar."], 1),
    ("Gardening", "A woman kneels by a flower bed with a trowel.", "She",
     ["drives the trowel to town.", "sells the flowers to the trowel.",
      "digs a hole and plants a bulb.", "swims away."], 2),
    ("Music", "A boy sits at the piano and opens the music.", "He",
     ["cooks the music.", "mows the piano.", "ties the piano in a knot.",
      "begins to play the first notes."], 3),
)  # fmt: skip


def format_line(index: int, activity: str, ctx_a: str, ctx_b: str, endings, label: int) -> str:
    """One line in hellaswag_val.jsonl's format (its ten fields, as the real file has them)."""
    return json.dumps(
        {"ind": index, "activity_label": activity, "ctx_a": ctx_a, "ctx_b": ctx_b,
         "ctx": f"{ctx_a} {ctx_b}", "split": "val", "split_type": "indomain",
         "label": label, "endings": list(endings), "source_id": f"minillada-{index}"}
    )  # fmt: skip


def write_format_examples(path: str | Path) -> Path:
    """Write ``FORMAT_EXAMPLES`` to ``path`` in the file's format and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [format_line(i, *example) for i, example in enumerate(FORMAT_EXAMPLES)]
    path.write_text("\n".join(lines) + "\n")
    return path


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
