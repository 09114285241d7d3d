"""GSM8K: the real test split, the two prompt formats, the answer-extraction rules and the score."""

import json
import re

import pytest

from minillada.estimate import wilson_interval
from minillada.evaluation.gsm8k import (
    BASE_STOP_STRINGS,
    INSTRUCT_PROMPT,
    GSM8KItem,
    GSM8KScore,
    exemplars_and_items,
    extract_answer,
    few_shot_prompt,
    flexible_answer,
    instruct_messages,
    is_correct,
    load_gsm8k,
    normalise_number,
    score_answers,
)

TWO = [
    GSM8KItem("What is 1+1?", "1+1=<<1+1=2>>2\n#### 2", "2"),
    GSM8KItem("What is 2*3?", "2*3=<<2*3=6>>6\n#### 6", "6"),
]


def test_the_real_test_split(gsm8k_test):
    items = load_gsm8k(gsm8k_test)
    assert len(items) == 1319
    first = json.loads(gsm8k_test.read_text(encoding="utf-8").splitlines()[0])
    assert first["answer"].endswith("#### 18")
    assert items[0] == GSM8KItem(first["question"], first["answer"], "18")
    for item in items:  # some references write "#### 1,450,000"; targets are plain integers
        assert re.fullmatch(r"-?[0-9]+", item.target), item
        assert normalise_number(item.target) == item.target
        assert extract_answer(item.solution) == item.target  # the strict rule reads references


def test_load_first_n(gsm8k_test):
    items = load_gsm8k(gsm8k_test, n=3)
    assert [item.target for item in items] == ["18", "3", "70000"]
    assert load_gsm8k(gsm8k_test, n=0) == []


def test_a_malformed_file_names_the_line(tmp_path):
    good = json.dumps({"question": "q", "answer": "a\n#### 1"})
    bad = json.dumps({"question": "q", "answer": "no final line"})
    path = tmp_path / "test.jsonl"
    path.write_text(f"{good}\n{good}\n{bad}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 3 of .*test\.jsonl"):
        load_gsm8k(path)
    assert len(load_gsm8k(path, n=2)) == 2  # reading stops before the damaged line
    path.write_text(f"{good}\nnot json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2 of"):
        load_gsm8k(path)


@pytest.mark.parametrize(
    "text, expected",
    [("72", "72"), (" $1,000. ", "1000"), ("72.00", "72"), ("-5", "-5"), ("-$3.0", "-3"),
     ("2.50", "2.50"), ("18.", "18")],
)  # fmt: skip
def test_normalise_number(text, expected):
    assert normalise_number(text) == expected


def test_instruct_prompt_is_the_authors_text():
    expected = (
        "Q: What is 1+1?\n\nA: Solve the problem step by step. At the end, write the final "
        "answer on a separate line in this exact format:\n#### <number>"
    )
    assert INSTRUCT_PROMPT.format(question="What is 1+1?") == expected
    assert instruct_messages("What is 1+1?") == [{"role": "user", "content": expected}]


def test_few_shot_prompt_is_lm_evals_format():
    assert few_shot_prompt("What is 3-1?", TWO) == (
        "Question: What is 1+1?\nAnswer: 1+1=<<1+1=2>>2\n#### 2\n\n"
        "Question: What is 2*3?\nAnswer: 2*3=<<2*3=6>>6\n#### 6\n\n"
        "Question: What is 3-1?\nAnswer:"
    )
    assert few_shot_prompt("What is 3-1?", []) == "Question: What is 3-1?\nAnswer:"
    assert "Question:" in BASE_STOP_STRINGS  # where a Base model starts inventing the next item


def test_exemplars_and_items():
    items = TWO + [GSM8KItem("q3", "#### 3", "3")]
    shots, scored = exemplars_and_items(items, 2)
    assert shots == TWO and scored == items[2:]
    assert exemplars_and_items(items, 0) == ([], items)
    for shots in (3, 4, -1):
        with pytest.raises(ValueError, match="shots < len"):
            exemplars_and_items(items, shots)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>Maybe\n#### 5</think>So 4 + 3 = 7.\n#### 7", "7"),  # the thinking is not graded
        ("<think>#### 5</think> a </think>\n#### 8", "8"),  # after the LAST </think>
        ("</think>First #### 3, no: #### 4", "4"),  # the last '####' wins
        ("So she pays #### $1,000.", "1000"),
        ("#### 72.00", "72"),
        ("The change is\n#### -12", "-12"),
        ("####42", "42"),  # spaces after '####' are optional
        ("<think>#### 5</think>The answer is 7.", None),  # no '####' after </think>
        ("The answer is 7.", None),
        ("Working...\n#### 9", "9"),  # no </think>: the whole text
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_without_a_thinking_marker():
    text = "<think>#### 5</think>The answer is 7."
    assert extract_answer(text, think_end=None) == "5"
    assert extract_answer("#### 1 [END] #### 2", think_end="[END]") == "2"
    with pytest.raises(ValueError, match="think_end=None"):
        extract_answer(text, think_end="")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She makes 9 * 2 = $18 every day.", "18"),
        ("1,000 or 2,500.", "2500"),
        ("It is -3", "-3"),
        ("#### 7\nQuestion", "7"),
        ("no digits at all", None),
        ("It is 18...", "18.."),  # lm-eval's quirk, kept: a trailing ellipsis spoils the number
    ],
)
def test_flexible_answer(text, expected):
    assert flexible_answer(text) == expected


def test_is_correct():
    assert is_correct("1,000", "1000")
    assert is_correct("72.0", "72")
    assert not is_correct("71", "72")
    assert not is_correct(None, "72")


def test_score_answers_counts_and_interval():
    items = TWO + [GSM8KItem("q3", "#### 3", "3"), GSM8KItem("q4", "#### 4", "4")]
    texts = [
        "<think>#### 9</think>\n#### 2",  # right
        "#### 7",  # a number, wrong
        "the answer is 3",  # no '####': not extracted, so wrong
        "<think>#### 4</think> four",  # the right number only inside the thinking: wrong
    ]
    score = score_answers(texts, items)
    assert (score.correct, score.n, score.extracted) == (1, 4, 2)
    assert score.accuracy == 0.25
    assert score.interval == wilson_interval(1, 4)
    assert score_answers(texts, items, think_end=None).correct == 2
    with pytest.raises(ValueError, match="3 texts for 4 items"):
        score_answers(texts[:3], items)


def test_score_string():
    score = GSM8KScore(correct=41, n=100, extracted=97)
    lo, hi = wilson_interval(41, 100)
    assert score.interval == (lo, hi)
    assert str(score) == "41.0% [31.9, 50.8] of 100 (a number found in 97)"
    with pytest.raises(ValueError, match="n >= 1"):
        GSM8KScore(correct=0, n=0, extracted=0)
