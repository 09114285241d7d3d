"""Lesson 2: cheap, honest quality measures for character-level samples.

A char model's samples are judged on two axes at once, because each alone can be gamed:
  * ``known_word_fraction``: the share of generated words that occur in the training text (does it
    spell?); a sampler that repeats "the the the" scores 1.0 here...
  * ``char_entropy``: the entropy of the sample's character distribution in bits; ...which this
    catches, since repetition collapses it well below the training text's (about 4.3 bits for
    Tiny Shakespeare).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

# letters, with one inner apostrophe (e'er, 'tis -> tis)
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def words(text: str) -> list[str]:
    """The words of ``text``, lower-cased."""
    return [w.lower() for w in WORD.findall(text)]


def vocabulary(text: str) -> set[str]:
    """Every distinct (lower-cased) word of a reference text, e.g. the training split."""
    return set(words(text))


def known_word_fraction(texts: Iterable[str], vocab: set[str]) -> float:
    """Fraction of the words in ``texts`` that appear in ``vocab`` (NaN if there are no words)."""
    ws = [w for t in texts for w in words(t)]
    return sum(w in vocab for w in ws) / len(ws) if ws else float("nan")


def char_entropy(texts: Iterable[str]) -> float:
    """Entropy in bits of the character distribution of all ``texts`` together."""
    counts = Counter(c for t in texts for c in t)
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else float("nan")


@dataclass
class CharQuality:
    known_words: float  # fraction of generated words found in the training text
    entropy_bits: float  # character entropy of the samples
    num_words: int  # how many words the fraction is over

    def __str__(self) -> str:
        known = f"known words {self.known_words:.1%} of {self.num_words}"
        return f"{known}, entropy {self.entropy_bits:.2f} bits"


def char_quality(texts: Iterable[str], vocab: set[str]) -> CharQuality:
    """Both measures for a list of samples."""
    texts = list(texts)
    return CharQuality(
        known_word_fraction(texts, vocab), char_entropy(texts), sum(len(words(t)) for t in texts)
    )
