"""Characters as tokens (lesson 1): a tokenizer with a reserved mask id, the train/val split,
random batches, evaluation windows, and Tiny Shakespeare ready to train on.

Shapes: B = batch size, L = sequence length (the model's context).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from minillada.data.downloads import load_text

DEFAULT_MASK_CHAR = "_"  # how a masked position prints; not a character of Tiny Shakespeare


@dataclass
class CharTokenizer:
    """Each distinct character gets an id; the extra id, ``mask_id = len(chars)``, is the mask."""

    chars: list[str]
    mask_char: str = DEFAULT_MASK_CHAR

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("CharTokenizer.chars must be distinct characters.")
        if self.mask_char in self.chars:
            raise ValueError(
                f"mask_char {self.mask_char!r} is also a corpus character; pick another mask_char."
            )
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.stoi[self.mask_char] = self.mask_id

    @classmethod
    def from_text(cls, text: str, mask_char: str = DEFAULT_MASK_CHAR) -> CharTokenizer:
        return cls(sorted(set(text)), mask_char)

    @property
    def mask_id(self) -> int:
        return len(self.chars)

    @property
    def vocab_size(self) -> int:
        """Characters plus the mask token: the size of the model's embedding and output layers."""
        return len(self.chars) + 1

    def encode(self, text: str) -> torch.Tensor:
        unknown = sorted({c for c in text if c not in self.stoi})
        if unknown:
            raise ValueError(
                f"Text has {len(unknown)} character(s) outside the vocabulary: {unknown[:10]!r}. "
                f"The tokenizer knows {len(self.chars)} characters "
                f"(and {self.mask_char!r} for a mask); "
                f"remove or replace the others before encoding."
            )
        return torch.tensor([self.stoi[c] for c in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        out = []
        for i in ids:
            if i == self.mask_id:
                out.append(self.mask_char)
            elif 0 <= i < len(self.chars):
                out.append(self.chars[i])
            else:
                raise ValueError(f"Token id {i} is outside the vocabulary [0, {self.vocab_size}).")
        return "".join(out)

    def to_dict(self) -> dict:
        return {"type": "char", "chars": "".join(self.chars), "mask_char": self.mask_char}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        return cls(list(d["chars"]), d.get("mask_char", DEFAULT_MASK_CHAR))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        return cls.from_dict(json.loads(Path(path).read_text()))


def train_val_split(
    data: torch.Tensor, train_fraction: float = 0.9
) -> tuple[torch.Tensor, torch.Tensor]:
    """First ``train_fraction`` of the corpus for training, the rest for validation (no shuffling:
    validation text is a contiguous stretch the model never saw, as in nanoGPT)."""
    n = int(train_fraction * len(data))
    return data[:n], data[n:]


def get_batch(
    data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``batch_size`` windows of ``block_size`` tokens starting at random offsets: (B, L)."""
    if len(data) <= block_size:
        raise ValueError(f"Need more than block_size={block_size} tokens, got {len(data)}.")
    starts = torch.randint(len(data) - block_size + 1, (batch_size,), generator=generator)
    return torch.stack([data[s : s + block_size] for s in starts.tolist()])  # (B, L)


def eval_windows(
    data: torch.Tensor, block_size: int, max_windows: int | None = None
) -> torch.Tensor:
    """Non-overlapping windows tiling ``data`` from the start (the tail shorter than a window is
    dropped), evenly thinned to at most ``max_windows``: (N, L). Deterministic, so every evaluation
    of every model sees the same text."""
    n = len(data) // block_size
    windows = data[: n * block_size].view(n, block_size)
    if max_windows is not None and max_windows < n:
        idx = torch.linspace(0, n - 1, max_windows).round().long()
        windows = windows[idx]
    return windows


def load_char_corpus() -> tuple[CharTokenizer, torch.Tensor, torch.Tensor]:
    """Tiny Shakespeare as (tokenizer, train ids, val ids): the first 90% / last 10% of its
    characters (downloaded once and verified, or read from $MINILLADA_DATA_DIR:
    see minillada.data.downloads)."""
    text = load_text("tinyshakespeare")
    tok = CharTokenizer.from_text(text)
    train_ids, val_ids = train_val_split(tok.encode(text))
    return tok, train_ids, val_ids
