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
from minillada.runtime import context_length, model_device
from minillada.sampling.generate import generate, var_generate


@dataclass
class ChatSettings:
    """How each answer is generated."""

    gen_length: int = 128  # the canvas (fixed) or the budget (variable length)
    block_length: int = 32
    steps: int = 128  # in all for the fixed canvas; per block with variable_length
    temperature: float = 0.0
    variable_length: bool = False  # iLLaDA's block-after-block generation, stopping at EOS
    think_end_boost: float = 0.0  # iLLaDA-8B-Instruct's end-of-thinking boost (100 in the paper)
    think_end_power: float = 3.0


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
    settings: ChatSettings = field(default_factory=ChatSettings)
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
        prompt = prompt.to(model_device(self.model))
        if s.variable_length:
            result = var_generate(
                self.model,
                prompt,
                s.gen_length,
                s.block_length,
                s.steps,
                tok.mask_id,
                stop_ids=tok.stop_ids,
                temperature=s.temperature,
                think_end_ids=tok.encode("</think>") if s.think_end_boost > 0 else None,
                think_end_boost=s.think_end_boost,
                think_end_power=s.think_end_power,
                generator=self.generator,
            )
            answer_ids, passes = result.answer([tok.eos_id]), result.forward_passes
        else:
            out = generate(
                self.model,
                prompt,
                s.gen_length,
                s.block_length,
                s.steps,
                tok.mask_id,
                temperature=s.temperature,
                generator=self.generator,
            )
            answer_ids, passes = out[0, prompt.shape[1] :].cpu(), s.steps
        answer_ids = answer_ids[answer_ids != tok.eos_id]  # the EOS padding never stays
        self.ids = torch.cat([prompt.cpu(), answer_ids[None]], dim=1)
        reply = tok.decode(answer_ids, skip_special_tokens=True).strip()
        turn = Turn(text, reply, answer_after_thinking(reply), passes)
        self.turns.append(turn)
        return turn
