"""Chat: LLaDA's special tokens and chat template by name, and any snapshot's own Jinja template.

The names are LLaDA's; their ids are never fixed here: they come from each tokenizer's files
(``minillada.data.tokenizer``). LLaDA's template is kept twice, as the Jinja string a
tokenizer_config.json carries and as plain Python (``render_chat``, to read); the tests check that
both render the same text. A downloaded snapshot's template (LLaDA's or iLLaDA's) is rendered as
written in its files, with ``render_jinja_chat``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence

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


@functools.lru_cache(maxsize=8)
def _compiled(template: str):
    """A chat template compiled once (compiling takes about a millisecond; rendering far less)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    env.filters["tojson"] = lambda value, indent=None: json.dumps(
        value, indent=indent, ensure_ascii=False
    )
    return env.from_string(template)


def render_jinja_chat(
    template: str,
    messages: Sequence[Mapping[str, str]],
    bos_token: str | None = None,
    eos_token: str | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """Render a Hugging Face chat template the way transformers' apply_chat_template does: a
    sandboxed Jinja environment with trim_blocks and lstrip_blocks, the variables ``messages``,
    ``bos_token``, ``eos_token``, ``add_generation_prompt``, and ``raise_exception``."""
    return _compiled(template).render(
        messages=[dict(m) for m in messages],
        bos_token=bos_token or "",
        eos_token=eos_token or "",
        add_generation_prompt=add_generation_prompt,
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


THINK_END = "</think>"  # iLLaDA-8B-Instruct closes its reasoning with this before the answer


def answer_after_thinking(text: str, marker: str = THINK_END) -> str:
    """The answer of an Instruct reply: the text after the last ``</think>`` (all of it if there is
    none), stripped; this is what the iLLaDA authors grade."""
    return text.rsplit(marker, 1)[-1].strip()
