"""A multi-turn chat with an Instruct model over its own chat template (lessons 6 and 7).

It follows ML-GSAI/LLaDA's chat.py token for token: each user turn is rendered with the tokenizer's
chat template on its own, its leading BOS dropped after the first turn, and appended to the
conversation so far; the model answers (LLaDA's fixed canvas with ``generate``, or iLLaDA's
``var_generate`` block after block); the answer's EOS tokens are removed before the next turn, so
the padding of a fixed canvas never accumulates in the context. The same class talks to lesson 6's
small instruct model and to LLaDA-8B-Instruct or iLLaDA-8B-Instruct on a GPU.

Shapes: n = tokens of the conversation so far.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from minillada.data.chat import answer_after_thinking
from minillada.data.tokenizer import LLaDATokenizer
from minillada.runtime import context_length
from minillada.sampling.answer import GenerationSettings, generate_answer
from minillada.sampling.variable_length import until_stop

ChatSettings = GenerationSettings  # lesson 6's name for the same settings


@dataclass
class Turn:
    user: str
    reply: str  # the decoded answer, special tokens dropped
    answer: str  # what follows the last </think> (the whole reply if there is none)
    forward_passes: int


@dataclass
class Chat:
    """A conversation with ``model``; ``say(text)`` returns the model's reply as a ``Turn``."""

    model: Callable
    tokenizer: LLaDATokenizer
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    generator: torch.Generator | None = None
    ids: torch.Tensor | None = None  # (1, n) the conversation so far, EOS removed
    turns: list[Turn] = field(default_factory=list)

    def _user_ids(self, text: str) -> torch.Tensor:
        if not text.strip():
            raise ValueError("An empty message: type something for the model to answer.")
        ids = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True)
        bos = self.tokenizer.special.bos
        if self.ids is not None and bos is not None and ids and ids[0] == bos:
            ids = ids[1:]  # one BOS per conversation, as the official chat.py
        return torch.tensor([ids], dtype=torch.long)

    def say(self, text: str) -> Turn:
        """Append the user's message, generate the answer, and return the turn."""
        s, tok = self.settings, self.tokenizer
        new = self._user_ids(text)
        prompt = new if self.ids is None else torch.cat([self.ids, new], dim=1)  # (1, n)
        context = context_length(self.model)
        if context is not None and prompt.shape[1] + s.block_length > context:
            raise ValueError(
                f"The conversation has {prompt.shape[1]} tokens and the model's context is "
                f"{context}: no room for an answer. Start a new Chat."
            )
        out = generate_answer(self.model, tok, prompt, s, generator=self.generator)
        if s.variable_length:  # the blocks up to the first stop id
            answer_ids = until_stop(out.generated, tok.stop_ids)
            turn_end = tok.end_of_turn
            if turn_end is not None and len(answer_ids) < len(out.generated):
                if int(out.generated[len(answer_ids)]) == turn_end.id:
                    # the context holds the turn as the template writes it: answer + end of turn
                    answer_ids = out.generated[: len(answer_ids) + 1]
        else:  # the whole canvas, as the official chat.py
            answer_ids = out.generated
        eos = torch.tensor(tok.eos_ids)
        answer_ids = answer_ids[~torch.isin(answer_ids, eos)]  # EOS padding never stays
        passes = out.forward_passes
        self.ids = torch.cat([prompt.cpu(), answer_ids[None]], dim=1)
        reply = tok.decode(answer_ids, skip_special_tokens=True).strip()
        # </think> may be a special token: find it in the text with special tokens kept
        answer = tok.strip_special(answer_after_thinking(tok.decode(answer_ids)))
        turn = Turn(text, reply, answer, passes)
        self.turns.append(turn)
        return turn
