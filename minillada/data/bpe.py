"""Byte-level BPE: a trainer and encoder written out for teaching, then the same in `tokenizers`.

The pipeline (GPT-2's byte-level BPE, the family of LLaDA's tokenizer):

1. Special tokens (``<|endoftext|>``, ``<|mdm_mask|>``, ...) are cut out of the text first: never
   split or merged, they take the ids after the learned vocabulary (as in LLaDA: 126080 and up).
2. Pre-tokenization: GPT-2's regex (``GPT2_SPLIT_PATTERN``) cuts the text into "words" (a word
   with its leading space, a number, a run of punctuation, whitespace); merges never cross them.
3. Each word becomes its UTF-8 bytes: ids 0..255 are the 256 bytes, so any text can be encoded.
4. Training counts every adjacent pair of tokens over all words (weighted by how often the word
   occurs), merges the most frequent pair into a new token, and repeats. Ties (equal counts) go
   to the smallest ``(left id, right id)``; ``tie_break="tokenizers"`` uses the `tokenizers`
   library's order instead, which reproduces its ``BpeTrainer`` merge for merge.
5. Encoding replays the merges inside each word, earliest-learned first; decoding joins bytes.

``tokenizer.json`` stores tokens as strings, so GPT-2 maps each byte to a printable character
(``bytes_to_unicode``): a space is ``Ġ``, a newline ``Ċ``. ``to_tokenizers`` turns a
``BPETokenizer`` into a `tokenizers.Tokenizer` (fast, Rust) with the same ids;
``train_bpe_fast`` trains one with the library's own trainer; ``save_tokenizer`` writes
``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` laid out like
LLaDA's, so ``minillada.data.tokenizer`` loads it exactly as it loads the released tokenizer.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Literal

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from minillada.data.chat import BOS_TOKEN, EOS_TOKEN, LLADA_CHAT_TEMPLATE, LLADA_SPECIAL_TOKENS
from minillada.runtime import progress_bar, progress_disabled

# GPT-2's pre-tokenizer regex, the one `tokenizers`' ByteLevel pre-tokenizer uses:
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# written for Python's built-in `re`, which has no \p{L} (letter) / \p{N} (number) classes: a
# letter is a word character that is neither a digit nor "_". The translation is exact for ASCII
# and for the letters and digits of any script; it differs only for numeric characters that are
# not digits (superscripts like "²", fractions like "½"): `re` counts them as letters, GPT-2 as
# numbers, so "x²" is one word here and two in `tokenizers`. tests/test_bpe.py checks the rest.
_LETTER = r"[^\W\d_]"  # \p{L}
_NUMBER = r"\d"  # \p{N}
_OTHER = r"(?:[^\s\w]|_)"  # neither whitespace, nor letter, nor number: punctuation, symbols, emoji
GPT2_SPLIT_PATTERN = "|".join(
    [
        r"'(?:s|t|re|ve|m|ll|d)",  # English contractions: "'s", "'ll", ...
        rf" ?{_LETTER}+",  # a word, with the space before it
        rf" ?{_NUMBER}+",  # a number, with the space before it
        rf" ?{_OTHER}+",  # a run of punctuation, with the space before it
        r"\s+(?!\S)",  # whitespace, leaving its last space to the word that follows
        r"\s+",  # whitespace at the end of the text
    ]
)
_SPLIT_RE = re.compile(GPT2_SPLIT_PATTERN)

TieBreak = Literal["ids", "tokenizers"]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (tokenizer.json stores strings)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in printable}  # 188 printable bytes stand for themselves
    n = 0
    for b in range(256):  # the 68 others (controls, space, ...) get the characters from U+0100 on
        if b not in mapping:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


BYTE_TO_UNICODE = bytes_to_unicode()
UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}


def bytes_to_token_string(b: bytes) -> str:
    """How a token's bytes are spelled in tokenizer.json, e.g. b" the" -> "Ġthe"."""
    return "".join(BYTE_TO_UNICODE[x] for x in b)


def token_string_to_bytes(s: str) -> bytes:
    """The inverse of ``bytes_to_token_string``."""
    return bytes(UNICODE_TO_BYTE[c] for c in s)


def pretokenize(text: str) -> list[str]:
    """Cut text into words with GPT-2's regex; BPE merges never cross these boundaries."""
    return _SPLIT_RE.findall(text)


def split_special_tokens(text: str, special_tokens: Iterable[str]) -> list[str]:
    """Cut text around special tokens, kept as pieces: "a<|eot_id|>b" -> [a, <|eot_id|>, b]."""
    specials = sorted(set(special_tokens), key=len, reverse=True)  # longest first wins
    if not specials:
        return [text] if text else []
    pattern = "(" + "|".join(re.escape(s) for s in specials) + ")"
    return [piece for piece in re.split(pattern, text) if piece]


def count_pairs(words: Sequence[Sequence[int]], counts: Sequence[int]) -> Counter[tuple[int, int]]:
    """How often each adjacent pair of ids occurs, each word weighted by its count."""
    pairs: Counter[tuple[int, int]] = Counter()
    for word, count in zip(words, counts, strict=True):
        for pair in pairwise(word):
            pairs[pair] += count
    return pairs


def merge_pair(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, scanning left to right."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


@dataclass
class BPETokenizer:
    """Byte-level BPE: ids 0..255 are bytes, then learned tokens, then special tokens."""

    vocab: dict[int, bytes]  # id -> the bytes it stands for (special tokens: their UTF-8 text)
    merges: dict[tuple[int, int], int]  # (left, right) -> merged id, in the order learned
    special_tokens: dict[str, int] = field(default_factory=dict)  # special token text -> id

    def __post_init__(self) -> None:
        self.ranks = {pair: r for r, pair in enumerate(self.merges)}  # learned earlier = lower
        self._cache: dict[str, list[int]] = {}  # word -> ids; words come back again and again

    @property
    def vocab_size(self) -> int:
        """Bytes, learned tokens and special tokens: the size of a model's embedding table."""
        return len(self.vocab)

    def encode_word(self, word: str) -> list[int]:
        """BPE inside one word: apply the earliest-learned merge that fits, until none does."""
        if word in self._cache:
            return self._cache[word]
        ids = list(word.encode("utf-8"))
        while len(ids) >= 2:
            pair = min(pairwise(ids), key=lambda p: self.ranks.get(p, len(self.ranks)))
            if pair not in self.ranks:
                break  # no pair of this word was ever merged
            ids = merge_pair(ids, pair, self.merges[pair])
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Text -> ids: special tokens, then GPT-2 pre-tokenization, then BPE inside each word."""
        ids: list[int] = []
        for piece in split_special_tokens(text, self.special_tokens):
            if piece in self.special_tokens:
                ids.append(self.special_tokens[piece])
                continue
            for word in pretokenize(piece):
                ids.extend(self.encode_word(word))
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Ids -> text; bytes that are not valid UTF-8 become U+FFFD, as in `tokenizers`."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        unknown = [i for i in ids if i not in self.vocab]
        if unknown:
            raise ValueError(
                f"Token ids {unknown[:10]} are outside this tokenizer's vocabulary "
                f"[0, {self.vocab_size}); decode ids made by this tokenizer "
                f"(or by a model with the same vocab_size)."
            )
        specials = set(self.special_tokens.values()) if skip_special_tokens else set()
        data = b"".join(self.vocab[i] for i in ids if i not in specials)
        return data.decode("utf-8", errors="replace")

    def token_strings(self, ids: Iterable[int]) -> list[str]:
        """Ids -> their tokenizer.json spelling (``Ġthe``), to look at a tokenization."""
        name = {i: s for s, i in self.special_tokens.items()}
        return [name[i] if i in name else bytes_to_token_string(self.vocab[i]) for i in ids]


def _tie_ranks(tie_break: TieBreak) -> dict[int, int]:
    """The order that breaks ties among the 256 byte ids (learned ids follow in their order)."""
    if tie_break == "ids":
        return {b: b for b in range(256)}  # byte value order
    if tie_break == "tokenizers":
        # `tokenizers` numbers its initial alphabet in the order of the byte characters' code
        # points: "!".."~", "¡".."¬", "®".."ÿ", then "Ā"... (bytes 0..32, 127..160, 173), so the
        # space ("Ġ", U+0120) comes after every printable byte.
        order = sorted(range(256), key=lambda b: ord(BYTE_TO_UNICODE[b]))
        return {b: rank for rank, b in enumerate(order)}
    raise ValueError(f"tie_break must be 'ids' or 'tokenizers', got {tie_break!r}.")


def _check_vocab_size(vocab_size: int, special_tokens: Sequence[str]) -> None:
    """The vocabulary must at least hold the 256 bytes and the special tokens."""
    if vocab_size < 256 + len(special_tokens):
        raise ValueError(
            f"vocab_size={vocab_size} cannot hold the 256 byte tokens and "
            f"{len(special_tokens)} special tokens; use vocab_size >= {256 + len(special_tokens)}."
        )
    if len(set(special_tokens)) != len(special_tokens):
        raise ValueError(f"special_tokens has duplicates: {list(special_tokens)}; list each once.")


def train_bpe(
    text: str,
    vocab_size: int,
    special_tokens: Sequence[str] = LLADA_SPECIAL_TOKENS,
    tie_break: TieBreak = "ids",
    progress: bool = False,
) -> BPETokenizer:
    """Learn ``vocab_size - 256 - len(special_tokens)`` merges: the vocab and ordered merges.

    Each step merges the most frequent adjacent pair. Ties go to the smallest ``(left, right)`` in
    the ``tie_break`` order: "ids" compares token ids (bytes by value, learned tokens by age);
    "tokenizers" orders the 256 bytes by their printable characters' code points, as
    `tokenizers`' BpeTrainer does, so that both learn the same merges. Only the words that contain
    the merged pair are re-counted (incremental pair counts). Stops early if no pair is left.
    """
    _check_vocab_size(vocab_size, special_tokens)
    num_base = vocab_size - len(special_tokens)  # bytes + learned tokens
    tie_rank = _tie_ranks(tie_break)

    # 1. The training words and how often each occurs (special tokens are cut out, never learned).
    word_counts: Counter[str] = Counter()
    for piece in split_special_tokens(text, special_tokens):
        if piece not in special_tokens:
            word_counts.update(pretokenize(piece))
    words = [list(w.encode("utf-8")) for w in word_counts]
    counts = list(word_counts.values())

    # 2. Pair counts, and which words hold each pair (so that a merge only revisits those words).
    pair_counts = count_pairs(words, counts)
    words_with: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
    for w, word in enumerate(words):
        for pair in pairwise(word):
            words_with[pair].add(w)

    vocab = {b: bytes([b]) for b in range(256)}
    id_of = {tok: i for i, tok in vocab.items()}  # bytes -> id
    merges: dict[tuple[int, int], int] = {}
    show = progress and not progress_disabled()
    bar = progress_bar(total=num_base - 256, desc="BPE merges", disable=not show)
    while len(vocab) < num_base and pair_counts:
        # 3. The most frequent pair; among equal counts, the smallest (left, right) in tie order.
        best_count = max(pair_counts.values())
        tied = [pair for pair, c in pair_counts.items() if c == best_count]
        best = min(tied, key=lambda p: (tie_rank[p[0]], tie_rank[p[1]]))

        # 4. A new token for it. Rarely, an earlier merge already spelled the same bytes ("ab"+"c"
        # before "a"+"bc"): the merge then reuses that id, as `tokenizers` does.
        merged = vocab[best[0]] + vocab[best[1]]
        if merged not in id_of:
            id_of[merged] = tie_rank[len(vocab)] = len(vocab)
            vocab[id_of[merged]] = merged
            bar.update(1)
        new_id = id_of[merged]
        merges[best] = new_id

        # 5. Re-count only the words that held the pair: remove their old pairs, add the new ones.
        touched = set()
        for w in words_with.pop(best):
            old, new = words[w], merge_pair(words[w], best, new_id)
            for pair in pairwise(old):
                pair_counts[pair] -= counts[w]
                touched.add(pair)
            for pair in pairwise(new):
                pair_counts[pair] += counts[w]
                words_with[pair].add(w)
                touched.add(pair)
            words[w] = new
        for pair in touched:  # forget pairs that no longer occur, so max() sees only real ones
            if pair_counts[pair] <= 0:
                del pair_counts[pair]
                words_with.pop(pair, None)
    bar.close()

    specials = {tok: len(vocab) + k for k, tok in enumerate(special_tokens)}
    for tok, i in specials.items():
        vocab[i] = tok.encode("utf-8")
    return BPETokenizer(vocab, merges, specials)


def to_tokenizers(bpe: BPETokenizer) -> Tokenizer:
    """The same tokenizer as a `tokenizers.Tokenizer` (Rust): same merges, ids and specials."""
    specials = set(bpe.special_tokens.values())
    vocab = {bytes_to_token_string(b): i for i, b in bpe.vocab.items() if i not in specials}
    merges = [
        (bytes_to_token_string(bpe.vocab[a]), bytes_to_token_string(bpe.vocab[b]))
        for a, b in bpe.merges
    ]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    _add_special_tokens(tokenizer, sorted(bpe.special_tokens, key=bpe.special_tokens.get))
    for tok, i in bpe.special_tokens.items():
        if tokenizer.token_to_id(tok) != i:
            raise ValueError(
                f"Special token {tok!r} got id {tokenizer.token_to_id(tok)} in `tokenizers`, "
                f"expected {i}: a BPETokenizer's ids must run 0..{bpe.vocab_size - 1} "
                f"with the special tokens last, as train_bpe makes them."
            )
    return tokenizer


def _add_special_tokens(tokenizer: Tokenizer, special_tokens: Sequence[str]) -> None:
    """Register special tokens after the learned vocabulary, flagged special, as LLaDA's are."""
    tokenizer.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False)
            for t in special_tokens
        ]
    )


def train_bpe_fast(
    text: str,
    vocab_size: int,
    special_tokens: Sequence[str] = LLADA_SPECIAL_TOKENS,
    specials_first: bool = False,
) -> Tokenizer:
    """``train_bpe`` done by `tokenizers`' BpeTrainer (Rust). Special tokens take the last ids, as
    in LLaDA's vocabulary, or with ``specials_first`` the first ids 0, 1, ..., as in iLLaDA's
    (whose mask token is id 5)."""
    _check_vocab_size(vocab_size, special_tokens)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size if specials_first else vocab_size - len(special_tokens),
        special_tokens=list(special_tokens) if specials_first else [],  # BpeTrainer: ids 0..
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=False,
    )
    pieces = [p for p in split_special_tokens(text, special_tokens) if p not in special_tokens]
    tokenizer.train_from_iterator(pieces, trainer)
    if not specials_first:
        _add_special_tokens(tokenizer, special_tokens)  # after training: they take the last ids
    return tokenizer


def _added_token_entry(token: AddedToken, with_special: bool = True) -> dict:
    """An added token as tokenizer_config.json / special_tokens_map.json spell it."""
    entry = {
        "content": token.content,
        "lstrip": token.lstrip,
        "normalized": token.normalized,
        "rstrip": token.rstrip,
        "single_word": token.single_word,
    }
    if with_special:
        entry["special"] = token.special
    return entry


def save_tokenizer(
    tokenizer: Tokenizer | BPETokenizer,
    folder: str | Path,
    bos_token: str = BOS_TOKEN,
    eos_token: str = EOS_TOKEN,
    chat_template: str | None = LLADA_CHAT_TEMPLATE,
) -> Path:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json like LLaDA's."""
    if isinstance(tokenizer, BPETokenizer):
        tokenizer = to_tokenizers(tokenizer)
    added = dict(sorted(tokenizer.get_added_tokens_decoder().items()))  # id -> AddedToken
    by_name = {t.content: t for t in added.values()}
    missing = [t for t in (bos_token, eos_token) if t not in by_name]
    if missing:
        raise ValueError(
            f"The tokenizer has no added token {missing}; found {sorted(by_name)}. Train it with "
            f"special_tokens that include them (e.g. minillada.data.bpe.LLADA_SPECIAL_TOKENS)."
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))

    others = [t.content for t in added.values() if t.content not in (bos_token, eos_token)]
    config = {
        "add_bos_token": False,  # as LLaDA: BOS comes from the chat template, not from encode()
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): _added_token_entry(t) for i, t in added.items()},
        "additional_special_tokens": others,
        "bos_token": bos_token,
        "clean_up_tokenization_spaces": False,
        "eos_token": eos_token,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 1_000_000_000_000_000_019_884_624_838_656,  # "no limit", as LLaDA's
        "pad_token": eos_token,  # LLaDA pads with EOS (never with the mask token)
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    special_map = {
        "additional_special_tokens": others,
        "bos_token": _added_token_entry(by_name[bos_token], with_special=False),
        "eos_token": _added_token_entry(by_name[eos_token], with_special=False),
        "pad_token": _added_token_entry(by_name[eos_token], with_special=False),
    }
    for name, content in [
        ("tokenizer_config.json", config),
        ("special_tokens_map.json", special_map),
    ]:
        (folder / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")
    return folder
