"""LLaDA's tokenizer loader, special ids and chat template, against the released files.

The released files: tokenizer_config.json, special_tokens_map.json and generation_config.json of
GSAI-ML/LLaDA-8B-Instruct.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jinja2
import pytest
import torch

from minillada.data import bpe, chat
from minillada.data.chat import render_chat, render_jinja_chat
from minillada.data.tokenizer import (
    LLaDATokenizer,
    SpecialTokenIds,
    TokenizerFilesError,
    pad_left,
    read_eos_ids,
    read_special_token_ids,
)

CONVERSATIONS = {
    "one turn": [{"role": "user", "content": "  What is 2+2?\n"}],
    "two turns": [
        {"role": "system", "content": "\tYou are helpful. "},
        {"role": "user", "content": "Hi!\n\n"},
    ],
    "three turns": [
        {"role": "user", "content": " Name a fruit."},
        {"role": "assistant", "content": "Apple.  \n"},
        {"role": "user", "content": "\n Another one, please "},
    ],
}


def render_with_jinja(template: str, messages: list[dict], bos_token: str) -> str:
    """How transformers renders a chat template (jinja2, trim_blocks and lstrip_blocks), written
    out here independently of minillada.data.chat.render_jinja_chat."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=messages, bos_token=bos_token, add_generation_prompt=True
    )


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory, tinyshakespeare: Path) -> Path:
    """A tokenizer folder saved from minillada's own BPE, trained on a slice of Tiny Shakespeare."""
    text = tinyshakespeare.read_text(encoding="utf-8")[:50_000]
    tok = bpe.train_bpe(text, 256 + 200 + len(chat.LLADA_SPECIAL_TOKENS))
    return bpe.save_tokenizer(tok, tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="module")
def tiny(tiny_folder: Path) -> LLaDATokenizer:
    return LLaDATokenizer.from_folder(tiny_folder)


def test_special_ids_from_released_config(llada_reference: Path) -> None:
    ids = read_special_token_ids(
        llada_reference
    )  # tokenizer_config.json only: no tokenizer.json here
    assert ids == SpecialTokenIds(
        bos=126080,
        eos=126081,
        pad=126081,
        mask=126336,
        start_header=126346,
        end_header=126347,
        eot=126348,
    )
    # config.json and generation_config.json name the tokenizer's EOS and no other
    assert read_eos_ids(llada_reference, ids.eos) == [ids.eos]


def test_the_released_template_ends_a_turn_with_eot(
    tiny_folder: Path, tmp_path: Path, llada_reference: Path
) -> None:
    released = json.loads((llada_reference / "tokenizer_config.json").read_text())
    folder = Path(shutil.copytree(tiny_folder, tmp_path / "released_template"))
    _edit_config(folder, lambda c: c.update(chat_template=released["chat_template"]))
    tok = LLaDATokenizer.from_folder(folder)
    assert tok.end_of_turn == ("<|eot_id|>", tok.eot_id)
    assert tok.stop_ids == [tok.eos_id, tok.eot_id] and not tok.thinks


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_chat_template_matches_released_jinja(name: str, llada_reference: Path) -> None:
    config = json.loads((llada_reference / "tokenizer_config.json").read_text())
    messages = CONVERSATIONS[name]
    expected = render_with_jinja(config["chat_template"], messages, config["bos_token"])
    assert render_chat(messages) == expected
    assert render_jinja_chat(config["chat_template"], messages, config["bos_token"]) == expected
    assert expected.count("<|startoftext|>") == 1 and expected.startswith("<|startoftext|>")
    # minillada's own Jinja template (written into saved tokenizer_config.json) renders the same.
    assert render_with_jinja(chat.LLADA_CHAT_TEMPLATE, messages, "<|startoftext|>") == expected


def test_chat_template_spelled_out() -> None:
    text = render_chat([{"role": "user", "content": " Hi \n"}])
    assert text == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_reference_without_tokenizer_json_names_the_file(
    tmp_path: Path, llada_reference: Path
) -> None:
    for name in ["tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]:
        shutil.copy(
            llada_reference / name, tmp_path / name
        )  # a temporary copy, outside the repository
    with pytest.raises(TokenizerFilesError, match="tokenizer.json"):
        LLaDATokenizer.from_folder(tmp_path)


def test_tiny_tokenizer_loads_with_its_special_ids(tiny: LLaDATokenizer, tiny_folder: Path) -> None:
    config = json.loads((tiny_folder / "tokenizer_config.json").read_text())
    id_of = {e["content"]: int(i) for i, e in config["added_tokens_decoder"].items()}
    assert tiny.bos_id == id_of["<|startoftext|>"] == 456
    assert tiny.eos_id == tiny.pad_id == id_of["<|endoftext|>"]
    assert tiny.mask_id == id_of["<|mdm_mask|>"] != tiny.pad_id
    assert tiny.eot_id == id_of["<|eot_id|>"]
    assert tiny.vocab_size == 456 + len(chat.LLADA_SPECIAL_TOKENS)
    assert tiny.eos_ids == [tiny.eos_id]  # no config.json or generation_config.json here
    assert tiny.stop_ids == [tiny.eos_id, tiny.eot_id]


def test_tiny_tokenizer_round_trip(tiny: LLaDATokenizer) -> None:
    text = "ROMEO:\nBut soft, what light through yonder window breaks? É 東京 🙂"
    ids = tiny.encode(text)
    assert tiny.decode(ids) == text
    assert tiny.decode(torch.tensor(ids)) == text
    assert tiny.encode(text, add_bos=True) == [tiny.bos_id, *ids]
    masked = [*ids[:3], tiny.mask_id, tiny.eos_id]
    assert "<|mdm_mask|>" in tiny.decode(masked)
    assert tiny.decode(masked, skip_special_tokens=True) == tiny.decode(ids[:3])


def test_tiny_chat_ids(tiny: LLaDATokenizer) -> None:
    messages = CONVERSATIONS["three turns"]
    ids = tiny.apply_chat_template(messages, tokenize=True)
    assert ids == tiny.encode(tiny.apply_chat_template(messages))
    assert ids[:2] == [tiny.bos_id, tiny.special.start_header]
    assert ids.count(tiny.bos_id) == 1  # BOS only before the first message
    assert ids.count(tiny.eot_id) == 3
    assert ids.count(tiny.special.start_header) == 4  # three turns + the assistant header
    tail = tiny.encode("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert ids[-len(tail) :] == tail
    assert tiny.decode(ids, skip_special_tokens=True).startswith("user\n\nName a fruit.assistant")


def test_left_padding(tiny: LLaDATokenizer) -> None:
    batch = tiny.batch_encode(["To be", "or not to be, that is the question"])
    short, long = tiny.encode("To be"), tiny.encode("or not to be, that is the question")
    assert batch.input_ids.shape == batch.attention_mask.shape == (2, len(long))
    pad = len(long) - len(short)
    assert batch.input_ids[0].tolist() == [tiny.pad_id] * pad + short
    assert batch.attention_mask[0].tolist() == [0] * pad + [1] * len(short)
    assert batch.input_ids[1].tolist() == long and bool(batch.attention_mask[1].all())
    assert batch.input_ids.dtype == torch.long
    input_ids, attention_mask = pad_left([[5], []], pad_id=0)  # unpacks like a tuple
    assert input_ids.tolist() == [[5], [0]] and attention_mask.tolist() == [[1], [0]]


def _edit_config(folder: Path, edit) -> None:
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def test_errors_name_the_file(tiny_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(TokenizerFilesError, match="tokenizer_config.json"):
        read_special_token_ids(tmp_path)
    with pytest.raises(TokenizerFilesError, match="is not one"):
        LLaDATokenizer.from_folder(tmp_path / "missing")

    def copy(name: str) -> Path:
        return Path(shutil.copytree(tiny_folder, tmp_path / name))

    def drop_mask(config: dict) -> None:
        decoder = config["added_tokens_decoder"]
        config["added_tokens_decoder"] = {
            k: v for k, v in decoder.items() if v["content"] != "<|mdm_mask|>"
        }

    no_mask = copy("no_mask")  # the mask in neither file
    _edit_config(no_mask, drop_mask)
    tokenizer_json = json.loads((no_mask / "tokenizer.json").read_text())
    tokenizer_json["added_tokens"] = [
        e for e in tokenizer_json["added_tokens"] if e["content"] != "<|mdm_mask|>"
    ]
    (no_mask / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    with pytest.raises(TokenizerFilesError, match=r"No diffusion mask token.*Pass mask_id="):
        read_special_token_ids(no_mask)
    assert read_special_token_ids(no_mask, mask_id=3).mask == 3  # the caller names it

    mask_in_tokenizer_json = copy("mask_in_tokenizer_json")  # only tokenizer.json lists it
    _edit_config(mask_in_tokenizer_json, drop_mask)
    found = read_special_token_ids(mask_in_tokenizer_json)
    assert found.mask == read_special_token_ids(tiny_folder).mask
    with pytest.raises(TokenizerFilesError, match=r"You passed mask_id=7.*use mask_id="):
        read_special_token_ids(tiny_folder, mask_id=7)

    pad_is_mask = copy("pad_is_mask")
    _edit_config(pad_is_mask, lambda c: c.update(pad_token="<|mdm_mask|>"))
    with pytest.raises(TokenizerFilesError, match="pad token is the mask token"):
        read_special_token_ids(pad_is_mask)

    no_decoder = copy("no_decoder")
    _edit_config(no_decoder, lambda c: c.pop("added_tokens_decoder"))
    with pytest.raises(TokenizerFilesError, match="added_tokens_decoder"):
        read_special_token_ids(no_decoder)

    wrong_generation = copy("wrong_generation")
    (wrong_generation / "generation_config.json").write_text(
        '{"bos_token_id": 1, "eos_token_id": 2}'
    )
    with pytest.raises(TokenizerFilesError, match="generation_config.json disagrees"):
        read_special_token_ids(wrong_generation)

    shifted = copy("shifted")  # tokenizer_config.json and tokenizer.json from different tokenizers
    _edit_config(
        shifted,
        lambda c: c.update(
            added_tokens_decoder={
                str(int(k) + 1000): v for k, v in c["added_tokens_decoder"].items()
            }
        ),
    )
    with pytest.raises(TokenizerFilesError, match="different tokenizers"):
        LLaDATokenizer.from_folder(shifted)


def test_a_base_tokenizer_refuses_a_chat(tmp_path: Path) -> None:
    specials = ("<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>")  # no chat tokens
    tok = bpe.train_bpe("a base model", 256 + 3, special_tokens=specials)
    base = LLaDATokenizer.from_folder(bpe.save_tokenizer(tok, tmp_path, chat_template=None))
    assert base.special.eot is None and base.chat_template is None
    with pytest.raises(TokenizerFilesError, match="no chat_template: it is a Base model's"):
        base.apply_chat_template([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="'role' and 'content'"):
        render_chat([{"role": "user"}])
    with pytest.raises(TypeError, match="list of strings"):
        base.batch_encode("one string")
    with pytest.raises(ValueError, match="empty batch"):
        pad_left([], pad_id=0)


def test_a_generation_prompt_needs_a_user_turn_last(tiny: LLaDATokenizer) -> None:
    finished = CONVERSATIONS["three turns"][:2]  # ends with the assistant's answer
    with pytest.raises(ValueError, match="ends with a 'assistant' turn"):
        tiny.apply_chat_template(finished)
    assert tiny.apply_chat_template(finished, add_generation_prompt=False)  # rendering it is fine
    with pytest.raises(ValueError, match="empty conversation"):
        tiny.apply_chat_template([])
