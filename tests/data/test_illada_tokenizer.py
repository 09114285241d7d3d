"""iLLaDA's tokenizer files: the mask found by its string and checked against id 5, BOS/EOS/PAD
from the files, the snapshot's own Jinja chat template with the system-role fallback, the answer
after </think>."""

import json

import pytest

from minillada.data.chat import (
    LLADA_CHAT_TEMPLATE,
    answer_after_thinking,
    merge_system_into_user,
    render_chat,
    render_jinja_chat,
)
from minillada.data.tokenizer import LLaDATokenizer, TokenizerFilesError, read_special_token_ids


def test_the_mask_is_found_by_its_string_at_id_5(tmp_path, illada_tokenizer):
    tok = LLaDATokenizer.from_folder(illada_tokenizer(tmp_path))
    assert tok.mask_id == 5 and tok.special.mask_token == "<[MASK]>"
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)  # the files' names, pad = EOS here
    assert tok.decode([tok.mask_id]) == "<[MASK]>"
    assert tok.mask_id != 126336  # never LLaDA's default
    with pytest.raises(TokenizerFilesError, match=r"You passed mask_id=126336.*use mask_id=5"):
        LLaDATokenizer.from_folder(tmp_path, mask_id=126336)


def test_a_mask_elsewhere_than_id_5_is_refused(tmp_path, illada_tokenizer):
    folder = illada_tokenizer(tmp_path, mask_at=3)
    with pytest.raises(TokenizerFilesError, match=r"'<\[MASK\]>' has the id 3.*mask id 5"):
        read_special_token_ids(folder)


def test_the_snapshot_s_own_template_and_the_system_fallback(tmp_path, illada_tokenizer):
    tok = LLaDATokenizer.from_folder(illada_tokenizer(tmp_path))
    chat = [{"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(chat) == "<|user|>Hi\n<|assistant|>"
    with_system = [{"role": "system", "content": "Be brief."}, *chat]
    # the template raises on a system turn: it is merged into the first user turn instead
    assert tok.apply_chat_template(with_system) == "<|user|>Be brief.\n\nHi\n<|assistant|>"
    assert merge_system_into_user(with_system) == [{"role": "user", "content": "Be brief.\n\nHi"}]
    assert tok.apply_chat_template(chat, tokenize=True) == tok.encode("<|user|>Hi\n<|assistant|>")


def test_llada_s_template_renders_as_the_python_restatement():
    messages = [
        {"role": "system", "content": "You are helpful. "},
        {"role": "user", "content": " What is 2+2?"},
    ]
    rendered = render_jinja_chat(LLADA_CHAT_TEMPLATE, messages, bos_token="<|startoftext|>")
    assert rendered == render_chat(messages)


def test_answer_after_thinking():
    assert answer_after_thinking("a</think>b</think> 42 ") == "42"
    assert answer_after_thinking("no reasoning") == "no reasoning"


def test_the_generation_config_must_agree(tmp_path, illada_tokenizer):
    folder = illada_tokenizer(tmp_path)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [7]}))
    with pytest.raises(TokenizerFilesError, match="generation_config.json disagrees"):
        read_special_token_ids(folder)


def test_stop_rules_of_an_illada_like_snapshot(tmp_path, illada_tokenizer):
    folder = illada_tokenizer(tmp_path)  # <pad> <s> </s> <unk> </think> <[MASK]>: ids 0..5
    (folder / "config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2]}))
    tok = LLaDATokenizer.from_folder(folder)
    assert tok.eos_ids == tok.stop_ids == [2]
    # its template writes plain text after an answer: no end-of-turn token to stop on
    assert tok.end_of_turn is None and "after an assistant message" in tok.end_of_turn_reason
    assert tok.thinks and tok.think_end_ids == [4]
    (folder / "config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 3}))
    with pytest.raises(TokenizerFilesError, match=r"config.json disagrees.*eos_token_id 3"):
        LLaDATokenizer.from_folder(folder)
