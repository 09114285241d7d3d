"""The chat loop: official chat.py's token bookkeeping (one BOS, the EOS padding removed before the
next turn), both generation modes, and the command-line entry point on a stand-in snapshot."""

import io

import pytest
import torch

from minillada.checkpoints.hf import load_hf_checkpoint, save_hf_checkpoint
from minillada.cli.chat import main
from minillada.data import bpe
from minillada.data.tokenizer import LLaDATokenizer
from minillada.models.llada import LLaDAModel, preset
from minillada.sampling.chat import Chat, ChatSettings
from minillada.sampling.generate import generate


@pytest.fixture
def standin(tmp_path):
    """A tiny LLaDA-layout Instruct stand-in: random weights, a BPE with LLaDA's chat tokens."""
    text = "Hello there. How are you? I am well, thank you, and you? " * 30
    tok = bpe.train_bpe_fast(text, 300)
    folder = bpe.save_tokenizer(tok, tmp_path / "standin")
    tokenizer = LLaDATokenizer.from_folder(folder)
    cfg = preset(
        "tiny", vocab_size=300, embedding_size=300, max_sequence_length=256,
        mask_token_id=tokenizer.mask_id, eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
    )  # fmt: skip
    model = LLaDAModel(cfg, generator=torch.Generator().manual_seed(0)).eval()
    save_hf_checkpoint(model, folder)
    return folder, load_hf_checkpoint(folder), tokenizer


def test_two_turns_keep_one_bos_and_drop_the_eos_padding(standin):
    _, model, tok = standin
    settings = ChatSettings(gen_length=16, block_length=8, steps=8)
    chat = Chat(model, tok, settings)
    first = chat.say("Hello there.")
    user1 = tok.apply_chat_template([{"role": "user", "content": "Hello there."}], tokenize=True)
    out1 = generate(model, torch.tensor([user1]), 16, 8, 8)
    answer1 = out1[0, len(user1) :]
    assert first.reply == tok.decode(answer1, skip_special_tokens=True).strip()
    assert torch.equal(
        chat.ids[0], torch.cat([out1[0, : len(user1)], answer1[answer1 != tok.eos_id]])
    )
    chat.say("How are you?")
    user2 = tok.apply_chat_template([{"role": "user", "content": "How are you?"}], tokenize=True)
    assert user2[0] == tok.bos_id
    assert (chat.ids[0] == tok.bos_id).sum() == 1  # the second turn's BOS was dropped
    assert (chat.ids[0] == tok.eos_id).sum() == 0
    assert len(chat.turns) == 2 and chat.turns[1].forward_passes == 8


def test_variable_length_mode_and_errors(standin):
    _, model, tok = standin
    chat = Chat(
        model, tok, ChatSettings(gen_length=16, block_length=8, steps=4, variable_length=True)
    )
    turn = chat.say("Hello there.")
    assert turn.forward_passes in (4, 8)  # one or two blocks
    with pytest.raises(ValueError, match="empty message"):
        chat.say("   ")


def test_the_command_line_chat(standin, monkeypatch, capsys):
    folder, _, _ = standin
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there.\nHow are you?\n\nnever read\n"))
    replies = main(["--model", str(folder), "--device", "cpu", "--gen-length", "16",
                    "--block-length", "8", "--steps", "8"])  # fmt: skip
    assert len(replies) == 2
    out = capsys.readouterr().out
    assert "fixed canvas of 16" in out and out.count("\n> ") == 2
