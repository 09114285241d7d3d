"""Chat: LLaDA's special tokens and chat template by name, and any snapshot's own Jinja template.

The names are LLaDA's; their ids are never fixed here: they come from each tokenizer's files
(``minillada.data.tokenizer``). LLaDA's template is kept twice, as the Jinja string a
tokenizer_config.json carries and as plain Python (``render_chat``, to read); the tests check that
both render the same text. A downloaded snapshot's template (LLaDA's or iLLaDA's) is rendered as
written in its files, with ``render_jinja_chat``, in the environment transformers (4.57) gives chat
templates (``chat_template_environment``): a sandbox with trim_blocks and lstrip_blocks, the
``{% generation %}`` block and the loop controls ``{% break %}`` / ``{% continue %}``, the filter
``tojson`` and the functions ``raise_exception`` and ``strftime_now``; the variables are
``messages``, ``tools``, ``documents``, ``add_generation_prompt``, every special token the files
name (``bos_token``, ``eos_token``, ``unk_token``, ...) and any extra keyword (``enable_thinking``).
What a template writes after an assistant message is how ``LLaDATokenizer.end_of_turn`` learns a
model's end of turn.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from jinja2 import Template, nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

# LLaDA's special tokens (tokenizer_config.json of GSAI-ML/LLaDA-8B-Instruct). Only the names are
# fixed here; their ids always come from the files.
BOS_TOKEN = "<|startoftext|>"  # beginning of a chat prompt
EOS_TOKEN = "<|endoftext|>"  # end of text; also the padding token
MASK_TOKEN = "<|mdm_mask|>"  # the diffusion mask (not registered as HF's `mask_token`, as in LLaDA)
START_HEADER_TOKEN = "<|start_header_id|>"  # opens the role header of a chat turn
END_HEADER_TOKEN = "<|end_header_id|>"  # closes it
EOT_TOKEN = "<|eot_id|>"  # end of a chat turn
LLADA_SPECIAL_TOKENS = (
    BOS_TOKEN,
    EOS_TOKEN,
    MASK_TOKEN,
    START_HEADER_TOKEN,
    END_HEADER_TOKEN,
    EOT_TOKEN,
)

# A Jinja chat template equivalent to LLaDA-8B-Instruct's, written into tokenizer_config.json so
# that other tools (transformers' apply_chat_template) render chats as LLaDA does. minillada
# renders chats in Python (render_chat below); the tests check that all three agree.
LLADA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first %}{{ bos_token }}{% endif %}"
    "{{ '" + START_HEADER_TOKEN + "' + message['role'] + '" + END_HEADER_TOKEN + "\n\n'"
    " + message['content'] | trim + '" + EOT_TOKEN + "' }}"
    "{% endfor %}"
    "{{ '" + START_HEADER_TOKEN + "assistant" + END_HEADER_TOKEN + "\n\n' }}"
)


def render_chat(messages: Sequence[Mapping[str, str]], bos_token: str = BOS_TOKEN) -> str:
    """LLaDA-8B-Instruct's chat template: BOS, header+content+EOT per turn, assistant header."""
    parts = []
    for k, message in enumerate(messages):
        if not isinstance(message, Mapping) or not {"role", "content"} <= set(message):
            raise ValueError(
                f"messages[{k}] should be a dict with 'role' and 'content', found "
                f"{message!r}; e.g. {{'role': 'user', 'content': 'Hello'}}."
            )
        if k == 0:
            parts.append(bos_token)  # only before the first message
        content = message["content"].strip()  # the template trims the content only, not the role
        parts.append(
            f"{START_HEADER_TOKEN}{message['role']}{END_HEADER_TOKEN}\n\n{content}{EOT_TOKEN}"
        )
    # Appended whatever the caller asks: the released template ignores add_generation_prompt.
    parts.append(f"{START_HEADER_TOKEN}assistant{END_HEADER_TOKEN}\n\n")
    return "".join(parts)


# --- A snapshot's own chat template (Jinja), as the tokenizer_config.json of an Instruct model
# carries it: what LLaDA's and iLLaDA's chats really look like, rendered without transformers.


class ChatTemplateError(ValueError):
    """A chat template rejected the conversation (it called raise_exception)."""


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """transformers' ``tojson`` filter: plain json.dumps (Jinja's own escapes HTML characters)."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    """The current local time in ``format``: templates date their system prompt with it."""
    return datetime.now().strftime(format)


class GenerationBlock(Extension):
    """``{% generation %}...{% endgeneration %}``: marks what the assistant writes. transformers'
    AssistantTracker renders the body unchanged unless an assistant-token mask is asked for;
    minillada never asks for one, so the body is all this block renders."""

    tags = {"generation"}

    def parse(self, parser: Parser) -> nodes.CallBlock:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Callable[[], str]) -> str:
        return caller()


def chat_template_environment() -> ImmutableSandboxedEnvironment:
    """A new Jinja environment like the one transformers (4.57) compiles chat templates in."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> Template:
    """A chat template compiled once (compiling takes about a millisecond; rendering far less)."""
    return chat_template_environment().from_string(template)


def render_jinja_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    bos_token: str | None = None,
    eos_token: str | None = None,
    add_generation_prompt: bool = True,
    *,
    special_tokens: Mapping[str, str | Sequence[str]] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    **template_kwargs: Any,
) -> str:
    """Render a Hugging Face chat template as transformers' apply_chat_template does (see
    ``chat_template_environment``), with the variables it passes: ``messages``, ``tools``,
    ``documents``, ``add_generation_prompt``, the tokenizer's ``special_tokens`` (name -> string,
    e.g. {"unk_token": "<unk>"}; names absent there stay undefined), then ``template_kwargs``
    (e.g. enable_thinking=False), which win over a special token of the same name.

    ``bos_token`` / ``eos_token``, when given, win over ``special_tokens``; when neither gives
    one they render as "" (a Base tokenizer may name none). A template that calls
    raise_exception raises ``ChatTemplateError`` with the template's message.
    """
    specials = dict(special_tokens or {})
    for key, given in (("bos_token", bos_token), ("eos_token", eos_token)):
        specials[key] = given if given is not None else specials.get(key) or ""
    variables = {**specials, **template_kwargs}
    return _compiled(template).render(
        messages=[dict(m) for m in messages],
        tools=tools,
        documents=documents,
        add_generation_prompt=add_generation_prompt,
        **variables,
    )


def merge_system_into_user(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The fallback for templates that reject a "system" turn (the iLLaDA authors' evaluation does
    the same): the system text goes in front of the first user turn, separated by a blank line."""
    messages = [dict(m) for m in messages]
    if len(messages) < 2 or messages[0].get("role") != "system" or messages[1]["role"] != "user":
        return messages
    system, user = messages[0], messages[1]
    merged = {**user, "content": f"{system['content']}\n\n{user['content']}"}
    return [merged, *messages[2:]]


THINK_START = "<think>"  # opens a reasoning section: files that have it belong to a thinking model
THINK_END = "</think>"  # iLLaDA-8B-Instruct closes its reasoning with this before the answer


def answer_after_thinking(text: str, marker: str = THINK_END) -> str:
    """The answer of an Instruct reply: the text after the last ``</think>`` (all of it if there is
    none), stripped; this is what the iLLaDA authors grade."""
    return text.rsplit(marker, 1)[-1].strip()
