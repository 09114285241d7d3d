"""GSM8K and HellaSwag on a loaded model: run_gsm8k answers exactly as generate_answer does on the
papers' prompts (chat for Instruct, few-shot text for Base), run_hellaswag chooses exactly as
choose_text does with the scorer named, and the papers' numbers are looked up with their setting."""

import json
from dataclasses import fields, replace

import pytest
import torch

from minillada.checkpoints.released import load_released
from minillada.checkpoints.standins import write_standin
from minillada.evaluation import benchmarks
from minillada.evaluation.benchmarks import (
    ChoiceItem,
    GeneratedItem,
    gsm8k_fingerprint,
    gsm8k_prompt,
    gsm8k_run_from_results,
    hellaswag_fingerprint,
    run_gsm8k,
    run_hellaswag,
    sampler_kind,
    settings_record,
)
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
from minillada.evaluation.results_file import (
    ResultsFile,
    ResultsFileError,
    read_results,
    snapshot_fingerprint,
)
from minillada.sampling.answer import (
    ILLADA_BASE,
    ILLADA_INSTRUCT,
    GenerationSettings,
    generate_answer,
)

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


# --- runs kept in a results file, and the time known before the run -----------------------------


def _without_time(results: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """A file's item lines without the seconds each took (the one thing two runs differ in)."""
    return [(i, {k: v for k, v in r.items() if k != "seconds"}) for i, r in results]


class _Killed(Exception):
    """Stands for the process dying in the middle of a run."""


def test_run_gsm8k_keeps_every_answer_and_resumes_after_a_kill(
    stand_ins, gsm8k_items, tmp_path, monkeypatch
):
    loaded, items = stand_ins["iLLaDA-8B-Instruct"], gsm8k_items[:3]
    whole = run_gsm8k(loaded, items, INSTRUCT_SETTINGS, results=tmp_path / "whole.jsonl")
    fingerprint, pairs = read_results(tmp_path / "whole.jsonl")
    assert fingerprint == whole.fingerprint and whole.results == tmp_path / "whole.jsonl"
    assert [GeneratedItem.from_dict(r) for _, r in pairs] == whole.items

    calls = []

    def dies_at_the_third(*args, **kwargs):
        if len(calls) == 2:
            raise _Killed
        calls.append(args)
        return generate_answer(*args, **kwargs)

    monkeypatch.setattr(benchmarks, "generate_answer", dies_at_the_third)
    path = tmp_path / "resumed.jsonl"
    with pytest.raises(_Killed):
        run_gsm8k(loaded, items, INSTRUCT_SETTINGS, results=path)
    assert [i for i, _ in read_results(path)[1]] == [0, 1]
    calls.clear()
    resumed = run_gsm8k(loaded, items, INSTRUCT_SETTINGS, results=path)
    assert len(calls) == 1  # only the item the killed run had not finished
    assert _without_time(read_results(path)[1]) == _without_time(pairs)
    assert [i.text for i in resumed.items] == [i.text for i in whole.items]
    assert resumed.score == whole.score and resumed.settings == whole.settings
    assert resumed.forward_passes == whole.forward_passes
    with pytest.raises(ResultsFileError, match=r"settings.threshold \(file: null, this run: 0.9\)"):
        run_gsm8k(loaded, items, replace(INSTRUCT_SETTINGS, threshold=0.9), results=path)
    with pytest.raises(ResultsFileError, match=r"data.digest"):
        run_gsm8k(loaded, gsm8k_items[1:4], INSTRUCT_SETTINGS, results=path)


def test_the_fingerprint_names_the_model_every_setting_and_the_items(stand_ins, gsm8k_items):
    loaded = stand_ins["iLLaDA-8B-Instruct"]
    fast = replace(INSTRUCT_SETTINGS, threshold=0.9, cache="dual")
    fingerprint = gsm8k_fingerprint(loaded, gsm8k_items[:2], fast)
    settings = fingerprint["settings"]
    assert {f.name for f in fields(GenerationSettings)} <= set(settings)
    assert (settings["threshold"], settings["cache"]) == (0.9, "dual")
    assert settings["sampler"] == "approximate" and settings["describe"] == fast.describe()
    assert settings_record(INSTRUCT_SETTINGS)["sampler"] == "exact"
    assert sampler_kind(replace(INSTRUCT_SETTINGS, cache="prefix")) == "approximate"
    model = fingerprint["model"]
    assert model["name"] == "stand-in for iLLaDA-8B-Instruct" and model["dtype"] == "float32"
    assert model == {"name": model["name"], "dtype": "float32"} | snapshot_fingerprint(
        loaded.report.folder
    )
    assert fingerprint["task"]["think_end"] == "</think>" and fingerprint["data"]["n"] == 2
    other = gsm8k_fingerprint(loaded, gsm8k_items[1:3], fast)
    assert other["data"]["digest"] != fingerprint["data"]["digest"]
    with pytest.raises(ResultsFileError, match="These results answer other items"):
        gsm8k_run_from_results(fingerprint, gsm8k_items[1:3], [])


def test_generated_and_chosen_items_round_trip_through_json():
    generated = GeneratedItem("#### 3</think>", 32, 32, 7, 0.25)
    assert GeneratedItem.from_dict(json.loads(json.dumps(generated.to_dict()))) == generated
    chosen = ChoiceItem(2, 1, 0.5)
    assert ChoiceItem.from_dict(json.loads(json.dumps(chosen.to_dict()))) == chosen
    with pytest.raises(ValueError, match=r"Expected a ChoiceItem with fields .* found \['raw'\]"):
        ChoiceItem.from_dict({"raw": 1})


def test_run_hellaswag_keeps_every_choice_and_resumes(stand_ins, tmp_path):
    loaded = stand_ins["iLLaDA-8B-Base"]
    plain = run_hellaswag(loaded, HELLASWAG, "confidence")
    path = tmp_path / "h.jsonl"
    with ResultsFile.open(path, hellaswag_fingerprint(loaded, HELLASWAG)) as f:
        f.append(1, plain.items[1].to_dict())  # one item left by an earlier, killed run
    kept = run_hellaswag(loaded, HELLASWAG, "confidence", results=path)
    assert [(i.raw_choice, i.normalised_choice) for i in kept.items] == [
        (i.raw_choice, i.normalised_choice) for i in plain.items
    ]
    assert (kept.correct, kept.correct_norm, kept.method) == (
        plain.correct, plain.correct_norm, plain.method,
    )  # fmt: skip
    assert [i for i, _ in read_results(path)[1]] == [1, 0, 2]  # the order they finished
    assert kept.fingerprint["task"] == {
        "name": "hellaswag", "method": "confidence", "add_bos": True, "padd_eos": True,
        "label": "confidence (padd_eos)",
    }  # fmt: skip
    with pytest.raises(ResultsFileError, match=r"task.method \(file: \"confidence\""):
        run_hellaswag(loaded, HELLASWAG, "mc", mc_num=4, results=path)


def test_progress_prints_the_expected_minutes_for_the_run_and_the_full_set(
    stand_ins, gsm8k_items, capsys
):
    run_gsm8k(stand_ins["iLLaDA-8B-Instruct"], gsm8k_items[:2], INSTRUCT_SETTINGS, progress=True)
    out = capsys.readouterr().out
    assert "GSM8K: " in out and " s per item (the first 2): the 2 requested items take about" in out
    assert "all 1,319 GSM8K problems about" in out and "in one process" in out
    run_hellaswag(stand_ins["iLLaDA-8B-Base"], HELLASWAG[:1], progress=True)
    assert "all 10,042 HellaSwag items about" in capsys.readouterr().out


def test_run_gsm8k_in_batches_answers_as_batch_1_and_resumes_after_a_kill(
    gsm8k_items, tmp_path, monkeypatch
):
    """Two prompts per forward pass (a float64 stand-in, so rounding cannot flip a choice): the
    answers of batch 1; killed after its first finished answer, the batched run keeps it, and
    the restart answers only the other problems and ends with the uninterrupted run's file."""
    name = "iLLaDA-8B-Instruct"
    loaded = load_released(write_standin(name, tmp_path / "si"), name, dtype=torch.float64)
    items = gsm8k_items[:3]
    one = run_gsm8k(loaded, items, INSTRUCT_SETTINGS)
    whole = run_gsm8k(loaded, items, INSTRUCT_SETTINGS, batch_size=2, results=tmp_path / "w.jsonl")
    assert [i.text for i in whole.items] == [i.text for i in one.items]
    assert [i.forward_passes for i in whole.items] == [i.forward_passes for i in one.items]
    assert whole.settings == one.settings + ", 2 prompts per pass"

    real, asked = benchmarks.generate_answers, []

    def dies_after_the_first(model, tok, prompts, settings, *, on_answer, **kwargs):
        asked.append(len(prompts))

        def once(k, answer):
            on_answer(k, answer)
            if len(asked) == 1:
                raise _Killed

        return real(model, tok, prompts, settings, on_answer=once, **kwargs)

    monkeypatch.setattr(benchmarks, "generate_answers", dies_after_the_first)
    path = tmp_path / "resumed.jsonl"
    with pytest.raises(_Killed):
        run_gsm8k(loaded, items, INSTRUCT_SETTINGS, batch_size=2, results=path)
    assert len(read_results(path)[1]) == 1
    resumed = run_gsm8k(loaded, items, INSTRUCT_SETTINGS, batch_size=2, results=path)
    assert asked == [3, 2]  # the restart answered only the two problems the kill left
    assert sorted(_without_time(read_results(path)[1])) == sorted(
        _without_time(read_results(tmp_path / "w.jsonl")[1])
    )
    assert [i.text for i in resumed.items] == [i.text for i in whole.items]
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        run_gsm8k(loaded, items, INSTRUCT_SETTINGS, batch_size=0)
