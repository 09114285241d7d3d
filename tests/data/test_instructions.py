"""Lesson 6's instruction data: seeded, split by the text, every reference answer true of its
prompt, answers of very different lengths."""

import re

import pytest

from minillada.data.instructions import (
    NUMBER_WORDS,
    TASKS,
    make_development_items,
    make_examples,
    make_instruction_data,
    speeches,
)
from minillada.data.subword import split_text

PLAY = """ROMEO:
But soft, what light through yonder window breaks?

JULIET:
Ay me, the night is long and cold and dark.

ROMEO:
She speaks, yet she says nothing: what of that?

A stage direction without a speaker

JULIET:
O Romeo, Romeo, wherefore art thou Romeo?
Deny thy father and refuse thy name.
"""


def test_speeches_are_parsed_with_their_speakers():
    turns = speeches(PLAY)
    assert [name for name, _ in turns] == ["ROMEO", "JULIET", "ROMEO", "JULIET"]
    assert turns[3][1] == [
        "O Romeo, Romeo, wherefore art thou Romeo?",
        "Deny thy father and refuse thy name.",
    ]


def test_every_answer_is_true_of_its_prompt():
    for e in make_examples(PLAY, 50, seed=3):
        body = re.sub(r"^[^:?]*[:?] ", "", e.prompt)  # the text after the instruction
        if e.task == "count":
            assert e.answer == NUMBER_WORDS[len(body.split())]
        elif e.task == "number":
            assert e.answer.split() == list(NUMBER_WORDS[1 : len(body.split()) + 1])
        elif e.task == "reverse":
            assert e.answer.split() == body.split()[::-1]
        elif e.task == "repeat":
            assert e.answer == body
        else:  # an A, B, A exchange: the answer is the first speaker, who speaks again
            first, second = e.prompt.split("\n")[1:]
            assert first.startswith(e.answer + ": ") and not second.startswith(e.answer + ":")


def test_seeded_and_interleaved():
    a, b = make_examples(PLAY, 20, seed=1), make_examples(PLAY, 20, seed=1)
    assert a == b and a != make_examples(PLAY, 20, seed=2)
    assert [e.task for e in a[:10]] == [*TASKS, *TASKS]


def test_too_little_text_is_a_clear_error():
    with pytest.raises(ValueError, match="too little"):
        make_examples("ROMEO:\nHi.\n", 5, seed=0)
    with pytest.raises(ValueError, match="at least 1"):
        make_examples(PLAY, 0, seed=0)


def test_held_out_items_come_from_the_unseen_tenth(tinyshakespeare):
    text = tinyshakespeare.read_text()
    data = make_instruction_data(text, 200, 50, seed=0)
    assert len(data.train) == 1000 and 240 <= len(data.held_out) <= 250
    train_prompts = {e.prompt for e in data.train}
    assert not any(e.prompt in train_prompts for e in data.held_out)
    _, held_text = split_text(text)
    for e in data.by_task()["repeat"]:
        assert e.answer in held_text  # words of a line of the last 10% of the play
    lengths = {t: sorted(len(e.answer) for e in es) for t, es in data.by_task("train").items()}
    assert max(lengths["count"]) <= 5 < min(lengths["repeat"])  # answers of different lengths
    assert max(lengths["number"]) == len("one two three four five six seven eight")


def test_development_items_are_new_items_from_the_unseen_tenth(tinyshakespeare):
    """Items for choosing settings (lesson 9's test F): the held-out distribution, none of the
    train or held-out prompts, no repeats, only the tasks asked for, the same on every call."""
    text = tinyshakespeare.read_text()
    data = make_instruction_data(text, 200, 50, seed=0)
    dev = make_development_items(text, 120, ("reverse", "repeat"), 200, 50, seed=0)
    assert len(dev) == 120 and {e.task for e in dev} == {"reverse", "repeat"}
    prompts = [e.prompt for e in dev]
    assert len(set(prompts)) == 120
    assert not set(prompts) & {e.prompt for e in data.train + data.held_out}
    _, held_text = split_text(text)
    assert all(e.answer in held_text for e in dev if e.task == "repeat")
    assert dev == make_development_items(text, 120, ("reverse", "repeat"), 200, 50, seed=0)
    with pytest.raises(ValueError, match="tasks from"):
        make_development_items(text, 10, ("reverse", "sing"))
