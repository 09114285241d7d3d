import pytest
import torch

from minillada.data.char import CharTokenizer, eval_windows, get_batch, train_val_split
from minillada.data.downloads import load_text


def test_tokenizer_on_tiny_shakespeare(tinyshakespeare):
    text = load_text("tinyshakespeare")  # the library's own lookup finds the file the fixture found
    tok = CharTokenizer.from_text(text)
    assert len(tok.chars) == 65 and tok.mask_id == 65 and tok.vocab_size == 66
    ids = tok.encode(text[:1000])
    assert tok.decode(ids) == text[:1000]
    assert tok.decode([tok.mask_id, tok.stoi["a"]]) == "_a"
    assert torch.equal(tok.encode("_a"), torch.tensor([65, tok.stoi["a"]]))


def test_unknown_characters_are_named():
    tok = CharTokenizer.from_text("abc \n")
    with pytest.raises(ValueError, match=r"outside the vocabulary: \['z', 'é'\]"):
        tok.encode("abz é")


def test_mask_char_must_not_be_a_corpus_character():
    with pytest.raises(ValueError, match="mask_char"):
        CharTokenizer.from_text("a_b")


def test_save_load_roundtrip(tmp_path):
    tok = CharTokenizer.from_text("hello world\n")
    tok.save(tmp_path / "tok.json")
    again = CharTokenizer.load(tmp_path / "tok.json")
    assert again.chars == tok.chars and again.mask_id == tok.mask_id


def test_split_and_batches():
    data = torch.arange(1000)
    train, val = train_val_split(data)
    assert len(train) == 900 and val[0] == 900
    g = torch.Generator().manual_seed(0)
    batch = get_batch(train, 4, 16, g)
    assert batch.shape == (4, 16)
    # every row is a contiguous window of the training data
    assert torch.equal(batch[:, 1:] - batch[:, :-1], torch.ones(4, 15, dtype=torch.long))
    assert batch.max() < 900
    with pytest.raises(ValueError, match="block_size"):
        get_batch(torch.arange(10), 2, 10)


def test_eval_windows_are_deterministic_and_disjoint():
    data = torch.arange(1000)
    w = eval_windows(data, 64)
    assert w.shape == (15, 64) and torch.equal(w.flatten(), data[:960])
    thin = eval_windows(data, 64, max_windows=4)
    assert thin.shape == (4, 64) and thin[0, 0] == 0 and thin[-1, 0] == 14 * 64
