"""The chat-template environment is the one transformers (4.57) gives templates: one template per
feature, each rendered to the exact string transformers would give, and the variables a
tokenizer passes (every special token its files name, extra keywords)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import jinja2
import pytest

from minillada.data import bpe, chat
from minillada.data.chat import ChatTemplateError, render_jinja_chat
from minillada.data.tokenizer import LLaDATokenizer

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Bye!"},
]


def render(template: str, messages=CONVERSATION, **kwargs) -> str:
    return render_jinja_chat(template, messages, **kwargs)


def test_loop_controls_break_and_continue() -> None:
    template = (
        "{% for m in messages %}"
        "{% if m.role == 'system' %}{% continue %}{% endif %}"
        "{% if loop.index > 3 %}{% break %}{% endif %}"
        "{{ m.content }};"
        "{% endfor %}"
    )
    assert render(template) == "Hi;Hello;"


def test_strftime_now(monkeypatch: pytest.MonkeyPatch) -> None:
    class Leap(datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2024, 2, 29, 13, 5)

    monkeypatch.setattr(chat, "datetime", Leap)  # the date is fixed, so the string is exact
    assert render("{{ strftime_now('%Y') }}|{{ strftime_now('%d %b %Y') }}") == "2024|29 Feb 2024"


def test_tojson_keeps_non_ascii_and_takes_indent_separators_and_sort_keys() -> None:
    messages = [{"role": "user", "content": "Grüße, 東京 <b>&</b>"}]
    assert render("{{ messages[0] | tojson(indent=2) }}", messages) == (
        '{\n  "role": "user",\n  "content": "Grüße, 東京 <b>&</b>"\n}'
    )  # no \\u escapes, no HTML escapes (Jinja's own tojson would write \\u003c for <)
    compact = "{{ messages[0] | tojson(separators=(',', ':'), sort_keys=true) }}"
    assert render(compact, messages) == '{"content":"Grüße, 東京 <b>&</b>","role":"user"}'
    assert render("{{ messages[0] | tojson(ensure_ascii=true) }}", messages) == json.dumps(
        messages[0]
    )


def test_the_generation_block_renders_its_body() -> None:
    template = (
        "{% for m in messages %}{% if m.role == 'assistant' %}"
        "{% generation %}[{{ m.content }}]{% endgeneration %}"
        "{% else %}{{ m.content }}{% endif %}|{% endfor %}"
    )
    assert render(template) == "Be brief.|Hi|[Hello]|Bye|[Bye!]|"


def test_raise_exception_gives_a_chat_template_error_with_the_template_s_message() -> None:
    template = (
        "{% if messages[0].role == 'system' %}{{ raise_exception('No system turn!') }}{% endif %}"
    )
    with pytest.raises(ChatTemplateError) as err:
        render(template)
    assert str(err.value) == "No system turn!"
    assert render(template, CONVERSATION[1:]) == ""


def test_trim_and_lstrip_blocks() -> None:
    template = (
        "{% for m in messages %}\n    {% if m.role == 'user' %}\n{{ m.content }}\n"
        "{% endif %}\n{% endfor %}"
    )
    assert render(template) == "Hi\nBye\n"


def test_tools_and_documents_are_none_unless_given() -> None:
    template = "{{ tools is none }} {{ documents is none }} {{ add_generation_prompt }}"
    assert render(template) == "True True True"
    tools = [{"type": "function", "function": {"name": "add"}}]
    given = "{{ tools[0].function.name }} {{ documents | length }}"
    assert render(given, tools=tools, documents=[{"text": "a"}, {"text": "b"}]) == "add 2"


def test_the_sandbox_is_immutable() -> None:
    with pytest.raises(jinja2.exceptions.SecurityError):
        render("{{ messages.append(1) }}")


def test_special_tokens_other_than_bos_and_eos() -> None:
    template = "{{ bos_token }}|{{ unk_token }}|{{ sep_token is defined }}|{{ eos_token }}"
    specials = {"bos_token": "<s>", "unk_token": "<unk>", "eos_token": "</s>"}
    assert render(template, special_tokens=specials) == "<s>|<unk>|False|</s>"
    # bos_token / eos_token given by name win; unnamed anywhere they render as ""
    assert render(template, bos_token="<B>", special_tokens=specials) == "<B>|<unk>|False|</s>"
    assert render(template) == "||False|"


def test_an_extra_keyword_reaches_the_template() -> None:
    template = (
        "{{ messages[-1].content }}"
        "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}"
    )
    assert render(template, enable_thinking=False) == "Bye!<think></think>"
    assert render(template, enable_thinking=True) == "Bye!"
    assert render(template) == "Bye!"
    # an extra keyword wins over a special token of the same name, as in transformers
    assert render("{{ unk_token }}", special_tokens={"unk_token": "<unk>"}, unk_token="?") == "?"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer whose files name an unk token and extra special tokens."""
    specials = (*chat.LLADA_SPECIAL_TOKENS, "<unk>", "<|tool|>")
    tok = bpe.train_bpe_fast("a few words to learn from " * 10, 256 + 16 + len(specials), specials)
    template = (
        "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ unk_token }}{% endfor %}"
        "{{ additional_special_tokens | length }}"
        "{% if enable_thinking is defined and not enable_thinking %}<nothink>{% endif %}"
    )
    folder = bpe.save_tokenizer(tok, tmp_path_factory.mktemp("specials"), chat_template=template)
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "unk_token": "<unk>"}))
    return folder


def test_a_tokenizer_passes_every_special_token_its_files_name(folder: Path) -> None:
    tok = LLaDATokenizer.from_folder(folder)
    found = tok.special_tokens_map
    assert found["unk_token"] == "<unk>" and found["bos_token"] == "<|startoftext|>"
    assert found["pad_token"] == found["eos_token"] == "<|endoftext|>"
    others = json.loads((folder / "special_tokens_map.json").read_text())
    assert found["additional_special_tokens"] == others["additional_special_tokens"]
    assert "sep_token" not in found and "cls_token" not in found  # the files name none
    n = len(others["additional_special_tokens"])
    chat_ = [{"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(chat_) == f"<|startoftext|>Hi<unk>{n}"
    assert tok.apply_chat_template(chat_, enable_thinking=False) == (
        f"<|startoftext|>Hi<unk>{n}<nothink>"
    )
