"""Byte-level BPE: the from-scratch trainer/encoder against the `tokenizers` library."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, pre_tokenizers

from minillada.data import bpe, chat

TRAIN_BYTES = 80_000  # Tiny Shakespeare slice the tests train on
NUM_MERGES = 400
VOCAB_SIZE = 256 + NUM_MERGES + len(chat.LLADA_SPECIAL_TOKENS)
UNICODE_TEXT = (
    "Héllo wörld! naïve café 東京 123 ４５ 🙂🙂 don't  you'll\t\n\n  x_y __init__ a\u0301b end "
)


@pytest.fixture(scope="module")
def corpus(tinyshakespeare) -> str:
    return tinyshakespeare.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def train_text(corpus: str) -> str:
    return corpus[:TRAIN_BYTES]


@pytest.fixture(scope="module")
def held_out(corpus: str) -> str:
    return corpus[-4000:]  # the end of the validation split, never seen in training


@pytest.fixture(scope="module")
def scratch(train_text: str) -> bpe.BPETokenizer:
    return bpe.train_bpe(train_text, VOCAB_SIZE)


def tokenizers_merges(tokenizer: Tokenizer) -> list[tuple[str, str]]:
    """The ordered merges of a `tokenizers` BPE model, as pairs of token strings."""
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]


def scratch_merges(tok: bpe.BPETokenizer) -> list[tuple[str, str]]:
    """The ordered merges of a BPETokenizer, spelled as in tokenizer.json."""
    return [
        (bpe.bytes_to_token_string(tok.vocab[a]), bpe.bytes_to_token_string(tok.vocab[b]))
        for a, b in tok.merges
    ]


def test_byte_map_is_gpt2s() -> None:
    mapping = bpe.bytes_to_unicode()
    assert len(set(mapping.values())) == 256
    assert set(mapping.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert mapping[ord("a")] == "a" and mapping[ord(" ")] == "Ġ" and mapping[ord("\n")] == "Ċ"
    assert bpe.token_string_to_bytes(bpe.bytes_to_token_string(bytes(range(256)))) == bytes(
        range(256)
    )


@pytest.mark.parametrize("which", ["shakespeare", "unicode"])
def test_pretokenizer_matches_tokenizers_bytelevel(which: str, train_text: str) -> None:
    text = train_text if which == "shakespeare" else UNICODE_TEXT
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    ours = [bpe.bytes_to_token_string(w.encode("utf-8")) for w in bpe.pretokenize(text)]
    theirs = [w for w, _ in byte_level.pre_tokenize_str(text)]
    assert ours == theirs


def test_pretokenizer_known_difference() -> None:
    # Documented at bpe.GPT2_SPLIT_PATTERN: `re` counts "²" as a letter, GPT-2's \p{N} as a number.
    assert bpe.pretokenize(" x²") == [" x²"]


def test_split_special_tokens() -> None:
    pieces = bpe.split_special_tokens("a<|eot_id|>b<|endoftext|>", chat.LLADA_SPECIAL_TOKENS)
    assert pieces == ["a", "<|eot_id|>", "b", "<|endoftext|>"]


def test_textbook_example() -> None:
    # Wikipedia's BPE example, one word: "aa" (4 times, overlapping) -> Z; then "Za" and "ab" tie
    # at 2 and the smaller ids win, ("a", "b") -> Y, as on Wikipedia; then "ZY" -> X.
    tok = bpe.train_bpe("aaabdaaabac", 256 + 3, special_tokens=())
    a, b = ord("a"), ord("b")
    assert list(tok.merges) == [(a, a), (a, b), (256, 257)]
    assert tok.vocab[258] == b"aaab"
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, a, ord("c")]


def test_tie_break_is_documented_order() -> None:
    # "ab" and "cd" occur once each (words "ab", ".", "cd"): the smallest (left, right) wins.
    tok = bpe.train_bpe("ab.cd", 256 + 1, special_tokens=())
    assert tok.merges == {(ord("a"), ord("b")): 256}


def test_tie_break_orders_differ_on_space() -> None:
    # Words "cd" and " c" tie: (" ", "c") and ("c", "d") occur once each. By byte value " " (32)
    # comes first; `tokenizers` orders bytes by their printable characters: "Ġ" (U+0120) after "c".
    text = "cd c"
    assert bpe.train_bpe(text, 257, special_tokens=()).merges == {(ord(" "), ord("c")): 256}
    by_tokenizers = bpe.train_bpe(text, 257, special_tokens=(), tie_break="tokenizers")
    assert by_tokenizers.merges == {(ord("c"), ord("d")): 256}
    assert tokenizers_merges(bpe.train_bpe_fast(text, 257, special_tokens=())) == [("c", "d")]


def test_round_trip(scratch: bpe.BPETokenizer, held_out: str) -> None:
    for text in [held_out, UNICODE_TEXT, "", "x<|mdm_mask|>y<|eot_id|>"]:
        assert scratch.decode(scratch.encode(text)) == text
    ids = scratch.encode("Hi<|eot_id|>")
    assert ids[-1] == scratch.special_tokens["<|eot_id|>"]
    assert scratch.decode(ids, skip_special_tokens=True) == "Hi"


def test_vocab_layout(scratch: bpe.BPETokenizer, held_out: str) -> None:
    assert scratch.vocab_size == VOCAB_SIZE
    assert len(scratch.merges) == NUM_MERGES
    assert list(scratch.special_tokens.values()) == list(range(256 + NUM_MERGES, VOCAB_SIZE))
    assert len(scratch.encode(held_out)) < 0.6 * len(held_out.encode())  # BPE compresses


def test_scratch_and_tokenizers_agree_on_held_out(scratch: bpe.BPETokenizer, held_out: str) -> None:
    """The target: same merges in `tokenizers` -> same ids on a passage neither saw in training."""
    fast = bpe.to_tokenizers(scratch)
    for text in [held_out, UNICODE_TEXT, "To be<|eot_id|><|mdm_mask|> or not"]:
        ids = scratch.encode(text)
        assert fast.encode(text).ids == ids
        assert fast.decode(ids, skip_special_tokens=False) == text
    assert fast.get_vocab_size(with_added_tokens=True) == scratch.vocab_size


def test_same_tie_break_reproduces_bpetrainer(train_text: str) -> None:
    fast = bpe.train_bpe_fast(train_text, VOCAB_SIZE)
    ours = bpe.train_bpe(train_text, VOCAB_SIZE, tie_break="tokenizers")
    assert scratch_merges(ours) == tokenizers_merges(fast)


def test_default_tie_break_differs_only_at_ties(
    scratch: bpe.BPETokenizer, train_text: str, held_out: str
) -> None:
    ours, theirs = (
        scratch_merges(scratch),
        tokenizers_merges(bpe.train_bpe_fast(train_text, VOCAB_SIZE)),
    )
    first = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
    assert first > 20  # the frequent merges agree
    # Replay the common prefix of merges and count pairs: both choices had the same (top) count.
    words = list(bpe.pretokenize(train_text))
    counts = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    split = [list(w.encode()) for w in counts]
    for pair, new_id in list(scratch.merges.items())[:first]:
        split = [bpe.merge_pair(s, pair, new_id) for s in split]
    pairs = bpe.count_pairs(split, list(counts.values()))
    id_of = {bpe.bytes_to_token_string(b): i for i, b in scratch.vocab.items()}
    ours_count = pairs[(id_of[ours[first][0]], id_of[ours[first][1]])]
    theirs_count = pairs[(id_of[theirs[first][0]], id_of[theirs[first][1]])]
    assert ours_count == theirs_count == max(pairs.values())


def test_save_tokenizer_files(scratch: bpe.BPETokenizer, tmp_path) -> None:
    bpe.save_tokenizer(scratch, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    decoder = {entry["content"]: int(i) for i, entry in config["added_tokens_decoder"].items()}
    assert decoder == scratch.special_tokens
    assert config["bos_token"] == "<|startoftext|>" and config["pad_token"] == "<|endoftext|>"
    assert all(entry["special"] for entry in config["added_tokens_decoder"].values())
    reloaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = "Now is the winter<|endoftext|>"
    assert reloaded.encode(text).ids == scratch.encode(text)


def test_errors() -> None:
    with pytest.raises(ValueError, match="vocab_size >= 262"):
        bpe.train_bpe("abc", 260)
    with pytest.raises(ValueError, match="tie_break"):
        bpe.train_bpe("abc", 300, tie_break="random")
    with pytest.raises(ValueError, match="outside this tokenizer's vocabulary"):
        bpe.train_bpe("abc", 262).decode([5000])
    with pytest.raises(ValueError, match="no added token"):
        bpe.save_tokenizer(bpe.train_bpe_fast("abc", 256, special_tokens=()), "/nonexistent/x")


def test_small_text_stops_early() -> None:
    tok = bpe.train_bpe("ab", 1000, special_tokens=("<|endoftext|>",))
    assert len(tok.merges) == 1 and tok.special_tokens == {"<|endoftext|>": 257}
