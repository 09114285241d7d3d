"""GSM8K and HellaSwag on a loaded model: run_gsm8k answers exactly as generate_answer does on the
papers' prompts (chat for Instruct, few-shot text for Base), run_hellaswag chooses exactly as
choose_text does with the scorer named, and the papers' numbers are looked up with their setting."""

from dataclasses import replace

import pytest
import torch

from minillada.checkpoints.released import load_released
from minillada.checkpoints.standins import write_standin
from minillada.evaluation.benchmarks import gsm8k_prompt, run_gsm8k, run_hellaswag
from minillada.evaluation.gsm8k import (
    BASE_STOP_STRINGS,
    GSM8KScore,
    few_shot_prompt,
    instruct_messages,
    load_gsm8k,
    score_answers,
)
from minillada.evaluation.hellaswag import HellaSwagItem
from minillada.evaluation.multiple_choice import choose_text, confidence_scorer, mdm_scorer
from minillada.evaluation.paper import PAPER_RESULTS, paper_result
from minillada.sampling.answer import ILLADA_BASE, ILLADA_INSTRUCT, generate_answer

INSTRUCT_SETTINGS = replace(ILLADA_INSTRUCT, gen_length=32)
BASE_SETTINGS = replace(ILLADA_BASE, gen_length=32)

HELLASWAG = [
    HellaSwagItem(
        "Baking cookies: A woman mixes flour and sugar in a bowl. She",
        ["pours the dough onto a tray.", "rides a horse.", "paints a wall.", "swims away."],
        0,
    ),
    HellaSwagItem(
        "Roof shingle removal: A man is sitting on a roof. He",
        [
            "is using wrap to wrap a pair of skis.",
            "starts pulling up roofing on a roof.",
            "is ripping level tiles off.",
            "holds a rubik's cube.",
        ],
        1,
    ),
    HellaSwagItem(
        "Playing the piano: The boy sits down at the piano. He ",  # a trailing space moves
        ["eats a sandwich.", "jumps into a lake.", "plays a short song.", "reads a newspaper."],
        2,
    ),
]


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    return {
        name: load_released(write_standin(name, root / name), name, dtype=torch.float32)
        for name in ("iLLaDA-8B-Instruct", "iLLaDA-8B-Base")
    }


@pytest.fixture(scope="module")
def gsm8k_items(gsm8k_test):
    return load_gsm8k(gsm8k_test, n=4)


def test_run_gsm8k_instruct_is_generate_answer_on_the_chat_prompts(stand_ins, gsm8k_items):
    loaded, items = stand_ins["iLLaDA-8B-Instruct"], gsm8k_items[:3]
    run = run_gsm8k(loaded, items, INSTRUCT_SETTINGS)
    expected = [
        generate_answer(
            loaded.model,
            loaded.tokenizer,
            loaded.chat_prompt(instruct_messages(item.question)),
            INSTRUCT_SETTINGS,
        )
        for item in items
    ]
    assert [i.text for i in run.items] == [a.text for a in expected]
    assert [i.forward_passes for i in run.items] == [a.forward_passes for a in expected]
    assert [i.output_tokens for i in run.items] == [a.output_tokens for a in expected]
    assert isinstance(run.score, GSM8KScore) and run.score.n == 3
    assert run.score == score_answers([a.text for a in expected], items, think_end="</think>")
    assert run.model == "stand-in for iLLaDA-8B-Instruct"
    assert run.settings == "0-shot chat, " + INSTRUCT_SETTINGS.describe()
    assert run.forward_passes == sum(a.forward_passes for a in expected)
    assert run.summary().startswith(f"stand-in for iLLaDA-8B-Instruct: GSM8K {run.score}")


def test_run_gsm8k_base_continues_the_few_shot_text(stand_ins, gsm8k_items):
    loaded = stand_ins["iLLaDA-8B-Base"]
    shots, items = gsm8k_items[:1], gsm8k_items[1:4]
    run = run_gsm8k(loaded, items, BASE_SETTINGS, shots=shots)
    texts = [
        generate_answer(
            loaded.model,
            loaded.tokenizer,
            gsm8k_prompt(loaded, item.question, shots),
            BASE_SETTINGS,
            stop_strings=BASE_STOP_STRINGS,
        ).text
        for item in items
    ]
    assert [i.text for i in run.items] == texts and run.score.n == 3
    assert run.score == score_answers(texts, items, think_end=None)
    assert run.settings.startswith("1-shot, variable length, budget 32")


def test_the_prompt_follows_the_model(stand_ins, gsm8k_items):
    base, instruct = stand_ins["iLLaDA-8B-Base"], stand_ins["iLLaDA-8B-Instruct"]
    shots, question = gsm8k_items[:2], gsm8k_items[2].question
    assert gsm8k_prompt(base, question, shots) == base.tokenizer.encode(
        few_shot_prompt(question, shots)
    )
    with pytest.raises(ValueError, match="A Base model is evaluated few-shot: pass shots"):
        gsm8k_prompt(base, question)
    with pytest.raises(ValueError, match="A Base model is evaluated few-shot"):
        run_gsm8k(base, gsm8k_items[2:3], BASE_SETTINGS)
    assert gsm8k_prompt(instruct, question) == instruct.chat_prompt(instruct_messages(question))
    with pytest.raises(ValueError, match="evaluated 0-shot in the chat; pass no shots"):
        gsm8k_prompt(instruct, question, shots)
    with pytest.raises(ValueError, match="pass no shots"):
        run_gsm8k(instruct, gsm8k_items[2:3], INSTRUCT_SETTINGS, shots=shots)


def test_hellaswag_confidence_is_choose_text_with_bos_and_eos(stand_ins):
    loaded = stand_ins["iLLaDA-8B-Base"]
    tok = loaded.tokenizer
    run = run_hellaswag(loaded, HELLASWAG, "confidence")
    scorer = confidence_scorer(loaded.model, tok.mask_id, eos_id=tok.eos_id)
    bos_encode = lambda text: [tok.bos_id, *tok.encode(text)]  # noqa: E731
    for item, got in zip(HELLASWAG, run.items, strict=True):
        want = choose_text(scorer, bos_encode, item.context, [" " + o for o in item.options])
        assert (got.raw_choice, got.normalised_choice) == (
            want.raw_choice,
            want.normalised_choice,
        )
    assert run.n == 3 and run.labels == [0, 1, 2] and run.method == "confidence (padd_eos)"
    assert run.correct == sum(i.raw_choice == y for i, y in zip(run.items, run.labels, strict=True))
    assert run.line().startswith(f"{run.method:<24} acc {100 * run.correct / 3:.1f}% [")


def test_hellaswag_monte_carlo_runs_and_a_bad_method_is_refused(stand_ins):
    loaded = stand_ins["iLLaDA-8B-Base"]
    tok = loaded.tokenizer
    run = run_hellaswag(loaded, HELLASWAG[:2], "mc", mc_num=4, batch_size=4)
    assert run.method == "Monte Carlo (4 samples)" and run.n == 2
    scorer = mdm_scorer(loaded.model, tok.mask_id, 4, 4)
    bos_encode = lambda text: [tok.bos_id, *tok.encode(text)]  # noqa: E731
    for item, got in zip(HELLASWAG[:2], run.items, strict=True):
        want = choose_text(scorer, bos_encode, item.context, [" " + o for o in item.options])
        assert got.raw_choice == want.raw_choice
        assert got.normalised_choice == want.normalised_choice
    with pytest.raises(ValueError, match=r"method must be 'confidence' or 'mc', got 'loglik'"):
        run_hellaswag(loaded, HELLASWAG, "loglik")


def test_paper_results_are_found_with_their_setting():
    assert paper_result("iLLaDA-8B-Base", "hellaswag_confidence").value == 76.6
    assert paper_result("iLLaDA-8B-Base", "hellaswag_mc").value == 74.3
    gsm8k = paper_result("iLLaDA-8B-Instruct", "gsm8k")
    assert gsm8k.value == 89.0 and "boost 100 power 3" in gsm8k.setting
    assert gsm8k.line().startswith("89.0% (0-shot, chat template")
    assert paper_result("iLLaDA-8B-Instruct", "hellaswag_mc") is None
    assert paper_result("LLaDA-8B-Instruct", "no such task") is None
    assert paper_result("iLLaDA-8B", "gsm8k") is None
    pairs = [(r.model, r.task) for r in PAPER_RESULTS]
    assert len(pairs) == len(set(pairs))  # one number per model and task
