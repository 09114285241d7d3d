"""Tiny Shakespeare as subword tokens: a BPE tokenizer trained on it, token windows, and the
conversion of per-token likelihood bounds to bits per character.

A character model and a subword model cannot be compared per token: a subword token covers several
characters. Both are compared per *character* of the same validation text: a bound of ``n`` nats
per token over windows holding T tokens that spell C characters is ``n * T / C / ln 2`` bits per
character (the total code length is the same; only the unit of division changes).

The split is by characters, as lesson 1's (first 90% of the text for training, the last 10% for
validation), and each part is encoded separately, so the two models are scored on the same text.

Shapes: N = number of windows, L = window length in tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from minillada.data.bpe import save_tokenizer, train_bpe_fast
from minillada.data.char import eval_windows
from minillada.data.chat import LLADA_SPECIAL_TOKENS, MASK_TOKEN
from minillada.data.downloads import load_text
from minillada.data.tokenizer import LLaDATokenizer

DEFAULT_VOCAB_SIZE = 2048  # learned merges + 256 bytes + LLaDA's 6 special tokens


@dataclass
class SubwordCorpus:
    """A tokenizer and the train / validation token ids of one text."""

    tokenizer: LLaDATokenizer  # the tokenizer files as lessons load them (mask id included)
    train_ids: torch.Tensor  # (T_train,) int64
    val_ids: torch.Tensor  # (T_val,) int64
    train_chars: int  # characters of the training text
    val_chars: int  # characters of the validation text

    @property
    def mask_id(self) -> int:
        return self.tokenizer.mask_id

    @property
    def chars_per_token(self) -> float:
        """Average characters spelled by one validation token."""
        return self.val_chars / len(self.val_ids)


def split_text(text: str, train_fraction: float = 0.9) -> tuple[str, str]:
    """First ``train_fraction`` of the characters for training, the rest for validation
    (lesson 1's split, so char and subword models are scored on the same validation text)."""
    n = int(train_fraction * len(text))
    return text[:n], text[n:]


def train_shakespeare_tokenizer(
    folder: str | Path, vocab_size: int = DEFAULT_VOCAB_SIZE, text: str | None = None
) -> LLaDATokenizer:
    """Train a byte-level BPE on the *training* 90% of Tiny Shakespeare; save it like LLaDA's."""
    text = load_text("tinyshakespeare") if text is None else text
    train_text, _ = split_text(text)
    tokenizer: Tokenizer = train_bpe_fast(train_text, vocab_size, LLADA_SPECIAL_TOKENS)
    save_tokenizer(tokenizer, folder)
    return LLaDATokenizer.from_folder(folder)


def load_subword_corpus(tokenizer_folder: str | Path, text: str | None = None) -> SubwordCorpus:
    """Encode Tiny Shakespeare's train and validation parts with the tokenizer in the folder."""
    tok = LLaDATokenizer.from_folder(tokenizer_folder)
    if MASK_TOKEN not in tok.tokenizer.get_vocab():
        raise ValueError(
            f"The tokenizer in {tokenizer_folder} has no {MASK_TOKEN} token; train it with "
            f"minillada.data.subword.train_shakespeare_tokenizer (LLaDA's special tokens)."
        )
    text = load_text("tinyshakespeare") if text is None else text
    train_text, val_text = split_text(text)
    train_ids = torch.tensor(tok.encode(train_text), dtype=torch.long)
    val_ids = torch.tensor(tok.encode(val_text), dtype=torch.long)
    return SubwordCorpus(tok, train_ids, val_ids, len(train_text), len(val_text))


def val_windows(corpus: SubwordCorpus, block_size: int, max_windows: int | None = None):
    """Non-overlapping validation windows (N, L) and the number of characters they spell."""
    windows = eval_windows(corpus.val_ids, block_size, max_windows)
    chars = sum(len(corpus.tokenizer.decode(w.tolist())) for w in windows)
    return windows, chars


def bits_per_char(nats_per_token: float, num_tokens: int, num_chars: int) -> float:
    """nats/token x tokens/characters / ln 2: a per-token bound in bits per character."""
    return nats_per_token * num_tokens / num_chars / math.log(2)
