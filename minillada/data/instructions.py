"""Lesson 6's instruction data set, made from Tiny Shakespeare by a seeded recipe.

Five tasks that a small model pretrained on the corpus (lesson 4's) can learn, each checked by
exact match, with answers of very different lengths, so that *when to stop* matters:

==============  =================================================  ===========================
task            the instruction                                    answer
==============  =================================================  ===========================
``count``       How many words? <3-8 words>                        a number word
``number``      Number the words: <2-8 words>                      "one two three ..."
``speaker``     Who speaks next? <A: line> <B: line>               A's name
``reverse``     Say these words backwards: <2-4 words>             the words, last first
``repeat``      Repeat after me: <3-6 words of a line>             the same words
==============  =================================================  ===========================

``count`` and ``number`` need no copying: the answer is a function of how many words there are,
and for ``number`` that is also *how long* the answer is. ``speaker``, ``reverse`` and ``repeat``
copy from the prompt, which a model pretrained on plain text has never had to do. ``speaker`` keeps
only exchanges where the turn really goes back to A (A, B, A in the play), so the answer is a fact
of the text, and a rule ("the other person answers") is learnable.

Training items come from the first 90% of the text and held-out items from the last 10%
(lessons 1 and 4's split), so a held-out item's lines were seen by neither the base model nor the
fine-tuning. Everything is a function of the text and the seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from minillada.data.subword import split_text

TASKS = ("count", "number", "speaker", "reverse", "repeat")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_LINE_CHARS = 60  # lines longer than this are not used (prompt + answer must fit 128 tokens)


@dataclass(frozen=True)
class Example:
    """One instruction and its reference answer."""

    task: str
    prompt: str  # the user's message (the chat template goes around it)
    answer: str  # the exact reference answer


def speeches(text: str) -> list[tuple[str, list[str]]]:
    """The play as (speaker, lines) turns: blocks separated by blank lines, each "NAME:\\n...".
    Blocks without a "NAME:" header line (stage text) are skipped."""
    turns = []
    for block in text.split("\n\n"):
        lines = [line for line in block.strip().split("\n") if line.strip()]
        if len(lines) >= 2 and re.fullmatch(r"[A-Za-z][A-Za-z ']*:", lines[0]):
            turns.append((lines[0][:-1], lines[1:]))
    return turns


def _words(line: str) -> list[str]:
    """Lower-case words of a line, punctuation dropped (what count and reverse operate on)."""
    return re.findall(r"[a-z']+", line.lower())


def _usable_lines(turns) -> list[str]:
    """Lines of 10-60 characters with at least 3 words (counted both ways the tasks count)."""
    return [
        line
        for _, lines in turns
        for line in lines
        if 10 <= len(line) <= MAX_LINE_CHARS and min(len(_words(line)), len(line.split())) >= 3
    ]


def _word_run(rng: random.Random, lines: list[str], n: int) -> list[str]:
    """``n`` consecutive words (lower case, no punctuation) from one or more random lines."""
    pool = _words(rng.choice(lines))
    while len(pool) < n:
        pool += _words(rng.choice(lines))
    start = rng.randint(0, len(pool) - n)
    return pool[start : start + n]


def _count(rng: random.Random, lines: list[str]) -> Example:
    n = rng.randint(3, 8)
    words = _word_run(rng, lines, n)
    return Example("count", f"How many words? {' '.join(words)}", NUMBER_WORDS[n])


def _number(rng: random.Random, lines: list[str]) -> Example:
    n = rng.randint(2, 8)
    words = _word_run(rng, lines, n)
    return Example(
        "number", f"Number the words: {' '.join(words)}", " ".join(NUMBER_WORDS[1 : n + 1])
    )


def _speaker(rng: random.Random, triples: list[tuple[str, str, str, str]]) -> Example:
    a, line_a, b, line_b = rng.choice(triples)
    return Example("speaker", f"Who speaks next?\n{a}: {line_a}\n{b}: {line_b}", a)


def _reverse(rng: random.Random, lines: list[str]) -> Example:
    words = _word_run(rng, lines, rng.randint(2, 4))
    return Example(
        "reverse", f"Say these words backwards: {' '.join(words)}", " ".join(words[::-1])
    )


def _repeat(rng: random.Random, lines: list[str]) -> Example:
    words = rng.choice(lines).split()  # the play's own spelling, punctuation and capitals kept
    n = rng.randint(3, min(6, len(words)))
    start = rng.randint(0, len(words) - n)
    fragment = " ".join(words[start : start + n])
    return Example("repeat", f"Repeat after me: {fragment}", fragment)


def _exchanges(turns) -> list[tuple[str, str, str, str]]:
    """(A, A's first line, B, B's first line) for every A, B, A run of turns with A != B."""
    out = []
    for (a, la), (b, lb), (c, _) in zip(turns, turns[1:], turns[2:], strict=False):
        if a == c and a != b and len(la[0]) <= MAX_LINE_CHARS and len(lb[0]) <= MAX_LINE_CHARS:
            out.append((a, la[0].strip(), b, lb[0].strip()))
    return out


def make_examples(text: str, n_per_task: int, seed: int) -> list[Example]:
    """``n_per_task`` examples of every task drawn from ``text`` with ``seed``, interleaved
    (count, number, speaker, reverse, repeat, count, ...)."""
    if n_per_task < 1:
        raise ValueError(f"n_per_task must be at least 1, got {n_per_task}.")
    turns = speeches(text)
    lines, triples = _usable_lines(turns), _exchanges(turns)
    if not lines or not triples:
        raise ValueError(
            f"The text holds {len(turns)} speeches, {len(lines)} usable lines and {len(triples)} "
            "A-B-A exchanges: too little to build the tasks. Pass the Tiny Shakespeare text "
            "(minillada.data.downloads.load_text())."
        )
    rng = random.Random(seed)
    makers = {
        "count": lambda: _count(rng, lines),
        "number": lambda: _number(rng, lines),
        "speaker": lambda: _speaker(rng, triples),
        "reverse": lambda: _reverse(rng, lines),
        "repeat": lambda: _repeat(rng, lines),
    }
    return [makers[task]() for _ in range(n_per_task) for task in TASKS]


@dataclass
class InstructionData:
    """The train and held-out examples of lesson 6."""

    train: list[Example]
    held_out: list[Example]

    def by_task(self, split: str = "held_out") -> dict[str, list[Example]]:
        examples = self.train if split == "train" else self.held_out
        return {task: [e for e in examples if e.task == task] for task in TASKS}


def make_instruction_data(
    text: str, n_train_per_task: int = 10_000, n_held_out_per_task: int = 100, seed: int = 0
) -> InstructionData:
    """Training examples from the first 90% of ``text``, held-out ones from the last 10%; a
    held-out example that also occurs in the training set (the same prompt) is dropped."""
    train_text, held_text = split_text(text)
    train = make_examples(train_text, n_train_per_task, seed)
    seen = {e.prompt for e in train}
    held = [
        e for e in make_examples(held_text, n_held_out_per_task, seed + 1) if e.prompt not in seen
    ]
    return InstructionData(train, held)


def make_development_items(
    text: str,
    n: int,
    tasks: Sequence[str] = TASKS,
    n_train_per_task: int = 10_000,
    n_held_out_per_task: int = 100,
    seed: int = 0,
) -> list[Example]:
    """``n`` items of ``tasks`` for choosing settings without touching the held-out items: drawn
    like them from the last 10% of ``text``, with seeds after theirs (seed + 101, + 102, ...), and
    none whose prompt is in ``make_instruction_data(text, n_train_per_task, n_held_out_per_task,
    seed)`` (train or held-out) or repeats. A setting picked by its score on these items leaves the
    held-out score of the model it picks an unbiased test of that model."""
    unknown = [t for t in tasks if t not in TASKS]
    if n < 1 or unknown or not tasks:
        raise ValueError(f"need n >= 1 items of tasks from {TASKS}; got n={n}, tasks={tasks}")
    official = make_instruction_data(text, n_train_per_task, n_held_out_per_task, seed)
    seen = {e.prompt for e in official.train} | {e.prompt for e in official.held_out}
    _, held_text = split_text(text)
    items: list[Example] = []
    for draw in range(seed + 101, seed + 101 + 1000):
        for e in make_examples(held_text, 100, draw):
            if e.task in tasks and e.prompt not in seen:
                seen.add(e.prompt)
                items.append(e)
        if len(items) >= n:
            return items[:n]
    raise ValueError(
        f"the held-out part of the text gives only {len(items)} new items of {list(tasks)}, not {n}"
    )


def encode_example(tokenizer, example: Example) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of one example: the prompt is the chat template around the user
    message (ending with the assistant header); the answer is its text and the end of turn
    (<|eot_id|>), to which each SFT recipe adds its EOS."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": example.prompt}], True)
    answer = tokenizer.encode(example.answer) + [tokenizer.eot_id]
    return prompt, answer


def encode_examples(
    tokenizer, examples: Sequence[Example]
) -> tuple[list[list[int]], list[list[int]]]:
    """``encode_example`` over a list: (prompts, answers)."""
    pairs = [encode_example(tokenizer, e) for e in examples]
    return [p for p, _ in pairs], [a for _, a in pairs]
