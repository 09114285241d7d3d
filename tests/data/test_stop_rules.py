"""Stop rules read from a snapshot's files: the EOS ids of the tokenizer, config.json and
generation_config.json; the end of turn the chat template writes after an assistant message;
stop_ids; ``</think>`` as one token or several; the checks that the files agree; the mask
override checked against the tokenizer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from minillada.data import bpe, chat
from minillada.data.chat import render_jinja_chat
from minillada.data.tokenizer import (
    END_OF_TURN_PROBE,
    EndOfTurn,
    LLaDATokenizer,
    TokenizerFilesError,
    read_eos_ids,
    read_special_token_ids,
)

TEXT = "the quick brown fox jumps over the lazy dog, think and answer " * 10
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>'"
    " + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ZEPHYR = (  # writes EOS after each assistant turn, a newline before it
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ '\n' + eos_token }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
PLAIN = (  # like iLLaDA's stand-in: plain text after an assistant turn, no special token
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '\n' }}{% endfor %}"
)
BASE_SPECIALS = (BOS, EOS, chat.MASK_TOKEN)  # no chat tokens: no <|eot_id|>


def make_folder(
    folder: Path,
    specials: tuple[str, ...] = chat.LLADA_SPECIAL_TOKENS,
    template: str | None = chat.LLADA_CHAT_TEMPLATE,
    **files: dict,
) -> Path:
    """A tokenizer folder from minillada's BPE; ``files`` are extra JSON files by stem
    (config={...} writes config.json, generation_config={...} generation_config.json)."""
    tok = bpe.train_bpe_fast(TEXT, 256 + 24 + len(specials), specials)
    bpe.save_tokenizer(tok, folder, chat_template=template)
    for stem, content in files.items():
        (folder / f"{stem}.json").write_text(json.dumps(content))
    return folder


def ids_of(folder: Path) -> dict[str, int]:
    config = json.loads((folder / "tokenizer_config.json").read_text())
    return {e["content"]: int(i) for i, e in config["added_tokens_decoder"].items()}


# --- eos_ids


def test_eos_ids_are_the_tokenizer_s_then_config_then_generation_config(tmp_path: Path) -> None:
    alone = LLaDATokenizer.from_folder(make_folder(tmp_path / "alone"))  # tokenizer files only
    assert alone.eos_ids == [alone.eos_id]
    eos, eot, header = alone.eos_id, alone.eot_id, alone.special.start_header
    both = make_folder(
        tmp_path / "both",
        config={"eos_token_id": [header, eos]},  # the tokenizer's EOS comes first all the same
        generation_config={"eos_token_id": [eot, header, eos]},
    )
    assert LLaDATokenizer.from_folder(both).eos_ids == [eos, header, eot]
    assert read_eos_ids(both, eos) == [eos, header, eot]
    one = make_folder(tmp_path / "one", config={"eos_token_id": eos, "bos_token_id": None})
    assert LLaDATokenizer.from_folder(one).eos_ids == [eos]  # an int, no repeats; null BOS: fine


# --- end_of_turn and stop_ids


def test_llada_s_template_ends_a_turn_with_eot_and_stop_ids_are_unchanged(tmp_path: Path) -> None:
    tok = LLaDATokenizer.from_folder(make_folder(tmp_path))
    # LLaDA's template appends the assistant header whatever it is told: only the first counts
    text = render_jinja_chat(
        tok.chat_template,
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": END_OF_TURN_PROBE}],
        add_generation_prompt=False,
        special_tokens=tok.special_tokens_map,
    )
    assert text.endswith(
        f"{END_OF_TURN_PROBE}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert tok.end_of_turn == EndOfTurn("<|eot_id|>", tok.eot_id) and tok.end_of_turn_reason is None
    assert tok.stop_ids == [tok.eos_id, tok.eot_id]


def test_a_chatml_template_ends_a_turn_with_im_end(tmp_path: Path) -> None:
    specials = (*BASE_SPECIALS, "<|im_start|>", "<|im_end|>")
    folder = make_folder(tmp_path, specials, CHATML)
    tok = LLaDATokenizer.from_folder(folder)
    im_end = ids_of(folder)["<|im_end|>"]
    assert tok.end_of_turn == ("<|im_end|>", im_end)
    assert tok.special.eot is None and tok.stop_ids == [tok.eos_id, im_end]


def test_a_template_that_writes_eos_after_an_answer_ends_a_turn_with_eos(tmp_path: Path) -> None:
    tok = LLaDATokenizer.from_folder(make_folder(tmp_path, BASE_SPECIALS, ZEPHYR))
    assert tok.end_of_turn == (EOS, tok.eos_id)  # after a newline: whitespace is allowed
    assert tok.stop_ids == [tok.eos_id]


def test_the_generation_config_s_eos_ids_stop_as_well(tmp_path: Path) -> None:
    specials = (*BASE_SPECIALS, "<|im_start|>", "<|im_end|>")
    folder = make_folder(tmp_path, specials, CHATML)
    im_start, im_end = ids_of(folder)["<|im_start|>"], ids_of(folder)["<|im_end|>"]
    eos = ids_of(folder)[EOS]
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, im_start]}))
    assert LLaDATokenizer.from_folder(folder).stop_ids == [eos, im_start, im_end]


@pytest.mark.parametrize(
    "template, reason",
    [
        (None, "no chat_template"),
        (PLAIN, r"writes '\\n' after an assistant message"),
        (
            "{% for m in messages %}{% if m.role == 'assistant' %}"
            "{{ raise_exception('Only user turns here') }}{% endif %}{% endfor %}",
            "cannot render .*ChatTemplateError: Only user turns here",
        ),
        ("{{ messages[0].content.upper(1, 2) }}", "cannot render .*TypeError"),
        ("{{ messages[0].content }}", "does not write the assistant's content"),
    ],
    ids=["no template", "plain text", "raises", "fails", "drops the answer"],
)
def test_no_end_of_turn_and_why(tmp_path: Path, template: str | None, reason: str) -> None:
    tok = LLaDATokenizer.from_folder(make_folder(tmp_path, BASE_SPECIALS, template))
    assert tok.end_of_turn is None
    assert tok.end_of_turn_reason is not None and re.search(reason, tok.end_of_turn_reason)
    assert tok.stop_ids == tok.eos_ids == [tok.eos_id]


# --- </think>


def test_think_end_as_one_token(tmp_path: Path, illada_tokenizer) -> None:
    tok = LLaDATokenizer.from_folder(illada_tokenizer(tmp_path))
    assert tok.thinks and tok.think_end_ids == [tok.tokenizer.token_to_id("</think>")]


@pytest.mark.parametrize(
    "specials, template",
    [
        (BASE_SPECIALS, chat.LLADA_CHAT_TEMPLATE + "{{ '<think>\n' }}"),  # the template says so
        ((*BASE_SPECIALS, "<think>"), chat.LLADA_CHAT_TEMPLATE),  # the tokens say so
    ],
    ids=["template", "tokens"],
)
def test_think_end_as_several_tokens(tmp_path: Path, specials, template) -> None:
    tok = LLaDATokenizer.from_folder(make_folder(tmp_path, specials, template))
    assert tok.tokenizer.token_to_id("</think>") is None
    ids = tok.think_end_ids
    assert len(ids) > 1 and ids == tok.encode("</think>") and tok.decode(ids) == "</think>"
    assert tok.thinks


def test_a_model_with_no_sign_of_thinking_has_no_think_end(tmp_path: Path) -> None:
    tok = LLaDATokenizer.from_folder(make_folder(tmp_path))  # LLaDA's tokens and template
    assert not tok.thinks
    with pytest.raises(
        TokenizerFilesError, match=r"no '</think>' token, and neither .*think_end_boost=0"
    ):
        _ = tok.think_end_ids


# --- the files must agree


def test_config_json_must_agree_with_the_tokenizer(tmp_path: Path) -> None:
    eos = ids_of(make_folder(tmp_path / "probe"))[EOS]
    bos = ids_of(tmp_path / "probe")[BOS]
    wrong_eos = make_folder(tmp_path / "eos", config={"eos_token_id": [eos + 1]})
    with pytest.raises(
        TokenizerFilesError,
        match=rf"config.json disagrees with .*tokenizer_config.json: eos_token_id \[{eos + 1}\] "
        rf"\(tokenizer: {eos}\).*one snapshot's files together",
    ):
        read_special_token_ids(wrong_eos)
    wrong_bos = make_folder(tmp_path / "bos", config={"bos_token_id": bos + 1, "eos_token_id": eos})
    with pytest.raises(TokenizerFilesError, match=rf"bos_token_id {bos + 1} \(tokenizer: {bos}\)"):
        LLaDATokenizer.from_folder(wrong_bos)
    not_an_id = make_folder(tmp_path / "text", config={"eos_token_id": "</s>"})
    with pytest.raises(TokenizerFilesError, match="expected eos_token_id to be an id or a list"):
        read_special_token_ids(not_an_id)


def test_generation_config_must_hold_config_json_s_eos_ids(tmp_path: Path) -> None:
    eos = ids_of(make_folder(tmp_path / "probe"))[EOS]
    folder = make_folder(
        tmp_path / "x",
        config={"eos_token_id": [eos, eos + 1]},
        generation_config={"eos_token_id": eos},
    )
    with pytest.raises(
        TokenizerFilesError,
        match=rf"generation_config.json gives eos_token_id {eos}, but .*config.json gives "
        rf"\[{eos}, {eos + 1}\].*lacks \[{eos + 1}\].*one snapshot's files together",
    ):
        read_special_token_ids(folder)
    # a generation config without eos_token_id falls back on config.json's: no disagreement
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": None}))
    assert LLaDATokenizer.from_folder(folder).eos_ids == [eos, eos + 1]


def test_the_files_are_checked_before_tokenizer_json_is_read(tmp_path: Path) -> None:
    eos = ids_of(make_folder(tmp_path / "probe"))[EOS]
    folder = make_folder(tmp_path / "x", config={"eos_token_id": eos + 1})
    (folder / "tokenizer.json").write_text("not a tokenizer")  # reading it would fail otherwise
    with pytest.raises(TokenizerFilesError, match="config.json disagrees"):
        LLaDATokenizer.from_folder(folder)


# --- the mask override


def test_a_mask_override_the_tokenizer_contradicts_is_refused(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "llada")
    mask = ids_of(folder)[chat.MASK_TOKEN]
    for kwargs in ({"mask_id": mask - 1}, {"mask_token": chat.MASK_TOKEN, "mask_id": mask - 1}):
        with pytest.raises(
            TokenizerFilesError, match=rf"You passed mask_id={mask - 1}.*the id {mask}\."
        ):
            LLaDATokenizer.from_folder(folder, **kwargs)
    assert LLaDATokenizer.from_folder(folder, mask_id=mask).mask_id == mask  # agreeing is fine

    no_mask = make_folder(tmp_path / "no_mask", (BOS, EOS, *chat.LLADA_SPECIAL_TOKENS[3:]))
    eos = ids_of(no_mask)[EOS]
    with pytest.raises(
        TokenizerFilesError, match=rf"mask id {eos} is also the id of the eos token '{EOS}'"
    ):
        LLaDATokenizer.from_folder(no_mask, mask_id=eos)
    assert LLaDATokenizer.from_folder(no_mask, mask_id=3).mask_id == 3  # a byte id: the caller's
