"""LLaDA's tokenizer loader, special ids and chat template, against the released files (spec §4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import minillada
from minillada import bpe
from minillada.datasets import load_text
from minillada.llada_tokenizer import (
    LLaDATokenizer,
    SpecialTokenIds,
    TokenizerFilesError,
    pad_left,
    read_special_token_ids,
    render_chat,
)

REFERENCE = Path(minillada.__file__).resolve().parents[1].parent / "shared/reference/llada-8b"
needs_reference = pytest.mark.skipif(
    not (REFERENCE / "tokenizer_config.json").is_file(),
    reason=f"LLaDA-8B reference files not found at {REFERENCE} (../shared/reference/llada-8b next "
    f"to the checkout); they are not part of the repository.",
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
    """How transformers renders a chat template (test-only: jinja2 is a dev dependency)."""
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # transformers' settings
    return env.from_string(template).render(
        messages=messages, bos_token=bos_token, add_generation_prompt=True
    )


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer folder saved from minillada's own BPE, trained on a slice of Tiny Shakespeare."""
    text = load_text("tinyshakespeare")[:50_000]
    tok = bpe.train_bpe(text, 256 + 200 + len(bpe.LLADA_SPECIAL_TOKENS))
    return bpe.save_tokenizer(tok, tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="module")
def tiny(tiny_folder: Path) -> LLaDATokenizer:
    return LLaDATokenizer.from_folder(tiny_folder)


@needs_reference
def test_special_ids_from_released_config() -> None:
    ids = read_special_token_ids(REFERENCE)  # tokenizer_config.json only: no tokenizer.json here
    assert ids == SpecialTokenIds(
        bos=126080,
        eos=126081,
        pad=126081,
        mask=126336,
        start_header=126346,
        end_header=126347,
        eot=126348,
    )


@needs_reference
@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_chat_template_matches_released_jinja(name: str) -> None:
    config = json.loads((REFERENCE / "tokenizer_config.json").read_text())
    messages = CONVERSATIONS[name]
    expected = render_with_jinja(config["chat_template"], messages, config["bos_token"])
    assert render_chat(messages) == expected
    assert expected.count("<|startoftext|>") == 1 and expected.startswith("<|startoftext|>")
    # minillada's own Jinja template (written into saved tokenizer_config.json) renders the same.
    assert render_with_jinja(bpe.LLADA_CHAT_TEMPLATE, messages, "<|startoftext|>") == expected


def test_chat_template_spelled_out() -> None:
    text = render_chat([{"role": "user", "content": " Hi \n"}])
    assert text == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@needs_reference
def test_reference_without_tokenizer_json_names_the_file(tmp_path: Path) -> None:
    for name in ["tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]:
        shutil.copy(REFERENCE / name, tmp_path / name)  # a temporary copy, outside the repository
    with pytest.raises(TokenizerFilesError, match="tokenizer.json"):
        LLaDATokenizer.from_folder(tmp_path)


def test_tiny_tokenizer_loads_with_its_special_ids(tiny: LLaDATokenizer, tiny_folder: Path) -> None:
    config = json.loads((tiny_folder / "tokenizer_config.json").read_text())
    id_of = {e["content"]: int(i) for i, e in config["added_tokens_decoder"].items()}
    assert tiny.bos_id == id_of["<|startoftext|>"] == 456
    assert tiny.eos_id == tiny.pad_id == id_of["<|endoftext|>"]
    assert tiny.mask_id == id_of["<|mdm_mask|>"] != tiny.pad_id
    assert tiny.eot_id == id_of["<|eot_id|>"]
    assert tiny.vocab_size == 456 + len(bpe.LLADA_SPECIAL_TOKENS)


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

    no_mask = copy("no_mask")
    _edit_config(no_mask, drop_mask)
    with pytest.raises(TokenizerFilesError, match=r"tokenizer_config.json.*<\|mdm_mask\|>"):
        read_special_token_ids(no_mask)

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


def test_chat_needs_chat_tokens(tmp_path: Path) -> None:
    specials = ("<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>")  # no chat tokens
    tok = bpe.train_bpe("a base model", 256 + 3, special_tokens=specials)
    base = LLaDATokenizer.from_folder(bpe.save_tokenizer(tok, tmp_path))
    assert base.special.eot is None
    with pytest.raises(TokenizerFilesError, match="<\\|start_header_id\\|>"):
        base.apply_chat_template([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="'role' and 'content'"):
        render_chat([{"role": "user"}])
    with pytest.raises(TypeError, match="list of strings"):
        base.batch_encode("one string")
    with pytest.raises(ValueError, match="empty batch"):
        pad_left([], pad_id=0)
