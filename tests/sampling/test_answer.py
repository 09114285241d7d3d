"""generate_answer: either sampler, called as the samplers themselves would be, with the text cut at
the stop strings, the answer after the last ``</think>``, the costs counted, and the papers'
settings named with their numbers."""

from dataclasses import replace

import pytest
import torch

from minillada.checkpoints.released import load_released
from minillada.checkpoints.standins import ILLADA_STANDIN_SPECIALS, write_standin
from minillada.data.tokenizer import TokenizerFilesError
from minillada.sampling.answer import (
    ILLADA_BASE,
    ILLADA_INSTRUCT,
    LLADA_INSTRUCT,
    GenerationSettings,
    generate_answer,
)
from minillada.sampling.generate import generate
from minillada.sampling.variable_length import until_stop, var_generate

CHAT = [{"role": "user", "content": "How many clips did Natalia sell in April and May?"}]
VARIABLE = replace(ILLADA_INSTRUCT, gen_length=64)  # two blocks of 32, boost 100 power 3
VARIABLE_NO_BOOST = replace(ILLADA_BASE, gen_length=64)
FIXED = GenerationSettings(gen_length=64, block_length=32, steps=32)  # 16 steps per block


@pytest.fixture(scope="module")
def instruct(tmp_path_factory):
    folder = write_standin("iLLaDA-8B-Instruct", tmp_path_factory.mktemp("i") / "s")
    loaded = load_released(folder, "iLLaDA-8B-Instruct", dtype=torch.float32)
    return loaded, torch.tensor(loaded.chat_prompt(CHAT))


def _stop_string(text: str, start: int) -> str:
    """Three characters of ``text`` (its first occurrence may be earlier), from ``start`` on when
    possible; none a partly decoded byte ("\ufffd"), which a block's own decoding can show."""
    windows = [text[i : i + 3] for i in [*range(start, len(text)), *range(start)]]
    return next(w for w in windows if len(w) == 3 and "\ufffd" not in w)


def _strip_specials(text: str) -> str:
    for token in ILLADA_STANDIN_SPECIALS:
        text = text.replace(token, "")
    return text.strip()


@pytest.mark.parametrize("settings", [VARIABLE, VARIABLE_NO_BOOST], ids=["boost", "no boost"])
def test_variable_length_is_var_generate(instruct, settings):
    loaded, prompt = instruct
    tok = loaded.tokenizer
    answer = generate_answer(loaded.model, tok, prompt, settings)
    direct = var_generate(
        loaded.model,
        prompt,
        settings.gen_length,
        settings.block_length,
        settings.steps,
        tok.mask_id,
        stop_ids=tok.stop_ids,
        decode=tok.decode,
        think_end_ids=tok.think_end_ids if settings.think_end_boost else None,
        think_end_boost=settings.think_end_boost,
        think_end_power=settings.think_end_power,
    )
    assert torch.equal(answer.generated, direct.generated)
    assert torch.equal(answer.ids, direct.answer(tok.stop_ids))
    assert answer.forward_passes == direct.forward_passes == direct.blocks * settings.steps
    assert answer.computed_tokens == len(direct.generated) == direct.blocks * 32
    assert answer.stopped == direct.stopped
    assert answer.text == tok.decode(answer.ids)
    assert answer.peak_bytes is None and answer.seconds > 0 and answer.tokens_per_second > 0


def test_the_boost_changes_the_answer(instruct):
    loaded, prompt = instruct
    boosted = generate_answer(loaded.model, loaded.tokenizer, prompt, VARIABLE)
    plain = generate_answer(loaded.model, loaded.tokenizer, prompt, VARIABLE_NO_BOOST)
    assert not torch.equal(boosted.generated, plain.generated)


def test_the_fixed_canvas_is_generate(instruct):
    loaded, prompt = instruct
    answer = generate_answer(loaded.model, loaded.tokenizer, prompt, FIXED)
    canvas = generate(loaded.model, prompt, 64, 32, 32, loaded.tokenizer.mask_id, temperature=0.0)
    generated = canvas[0, len(prompt) :]
    assert torch.equal(answer.generated, generated)
    assert torch.equal(answer.ids, until_stop(generated, loaded.tokenizer.stop_ids))
    assert answer.forward_passes == 32 and answer.computed_tokens == 64
    eos = loaded.tokenizer.eos_id
    assert answer.stopped == bool((generated == eos).any())


@pytest.mark.parametrize("settings", [VARIABLE, FIXED], ids=["variable", "fixed"])
def test_stop_strings_cut_the_text(instruct, settings):
    loaded, prompt = instruct
    full = generate_answer(loaded.model, loaded.tokenizer, prompt, settings)
    stop = _stop_string(full.text, len(full.text) // 3)
    k = full.text.index(stop)
    cut = generate_answer(loaded.model, loaded.tokenizer, prompt, settings, stop_strings=[stop])
    assert cut.text == full.text[:k] == full.text.split(stop, 1)[0] and k < len(full.text)
    assert cut.stopped
    assert cut.forward_passes <= full.forward_passes
    if settings.variable_length:  # the generation itself stops at the block holding the stop
        assert torch.equal(cut.generated, full.generated[: len(cut.generated)])
    else:  # the canvas is generated whole; only the text is cut
        assert torch.equal(cut.generated, full.generated)
    missing = "\x00never\x00"
    same = generate_answer(loaded.model, loaded.tokenizer, prompt, settings, stop_strings=[missing])
    assert same.text == full.text and torch.equal(same.generated, full.generated)


def test_final_is_what_follows_the_last_think_end(instruct):
    loaded, prompt = instruct
    answer = generate_answer(loaded.model, loaded.tokenizer, prompt, VARIABLE)
    assert "</think>" in answer.text  # the boost closes the thinking within the budget
    assert answer.final == _strip_specials(answer.text.rsplit("</think>", 1)[1])
    assert answer.reply == _strip_specials(answer.text)
    plain = generate_answer(loaded.model, loaded.tokenizer, prompt, VARIABLE_NO_BOOST)
    if "</think>" not in plain.text:  # without the boost it does not close it: final is all
        assert plain.final == plain.reply


class ScriptedModel(torch.nn.Module):
    """Predicts ``script[i]`` at generated position i (after a prompt of ``P`` tokens), whatever
    the input."""

    def __init__(self, config, P: int, script: list[int]):
        super().__init__()
        self.config, self.P, self.script = config, P, script
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, ids, attention_mask=None):
        logits = torch.full((*ids.shape, self.config.vocab_size), -10.0)
        for i, token in enumerate(self.script):
            if self.P + i < ids.shape[1]:
                logits[:, self.P + i, token] = 10.0
        return logits


def test_final_cut_on_a_scripted_answer(instruct):
    loaded, prompt = instruct
    tok = loaded.tokenizer
    think_end, eos = tok.think_end_ids[0], tok.eos_id
    script = [
        *tok.encode("Let me think"), think_end, *tok.encode(" again"), think_end,
        *tok.encode(" The answer is 72."), eos,
    ]  # fmt: skip
    script += [eos] * (32 - len(script))
    model = ScriptedModel(loaded.model.config, len(prompt), script)
    variable = GenerationSettings(64, 32, 32, variable_length=True)
    for settings in (GenerationSettings(32, 32, 32), variable):
        answer = generate_answer(model, tok, prompt, settings)
        assert answer.text == "Let me think</think> again</think> The answer is 72."
        assert answer.final == "The answer is 72."
        assert answer.reply == "Let me think again The answer is 72."
        assert answer.stopped and answer.output_tokens == len(tok.encode(answer.text))
    assert answer.forward_passes == 32 and answer.computed_tokens == 32  # stopped after 1 block


def test_the_boost_needs_a_think_end_token(tmp_path):
    folder = write_standin("LLaDA-8B-Instruct", tmp_path / "llada")
    loaded = load_released(folder, "LLaDA-8B-Instruct", dtype=torch.float32)
    prompt = loaded.chat_prompt(CHAT)
    with pytest.raises(TokenizerFilesError, match=r"no '</think>' token.*think_end_boost=0"):
        generate_answer(loaded.model, loaded.tokenizer, prompt, replace(VARIABLE, gen_length=32))
    answer = generate_answer(loaded.model, loaded.tokenizer, prompt, GenerationSettings(32, 32, 8))
    assert answer.computed_tokens == 32  # without the boost the same model answers


class Counting(torch.nn.Module):
    """The model, counting the positions its forward passes run over."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self.calls, self.positions = inner, inner.config, 0, 0

    def forward(self, ids, attention_mask=None):
        self.calls += 1
        self.positions += ids.numel()
        return self.inner(ids, attention_mask=attention_mask)


@pytest.mark.parametrize("settings", [VARIABLE, VARIABLE_NO_BOOST, FIXED])
def test_the_costs_are_counted(instruct, settings):
    loaded, prompt = instruct
    model = Counting(loaded.model)
    answer = generate_answer(model, loaded.tokenizer, prompt, settings)
    assert answer.forward_passes == model.calls
    assert answer.positions_processed == model.positions
    assert answer.output_tokens == len(answer.ids)  # no stop string cut it: the ids themselves
    assert answer.tokens_per_second == answer.output_tokens / answer.seconds
    stop = _stop_string(answer.text, len(answer.text) // 2)
    cut = generate_answer(loaded.model, loaded.tokenizer, prompt, settings, stop_strings=[stop])
    assert cut.stopped and cut.text == answer.text.split(stop, 1)[0]
    assert cut.output_tokens == len(loaded.tokenizer.encode(cut.text))  # re-encoded after a cut


def test_the_papers_settings_are_described_with_their_numbers():
    assert ILLADA_INSTRUCT.describe() == (
        "variable length, budget 2048, blocks of 32, 32 steps per block, temperature 0, "
        "end-of-thinking boost 100 power 3"
    )
    assert ILLADA_BASE.describe() == (
        "variable length, budget 1024, blocks of 32, 32 steps per block, temperature 0"
    )
    assert LLADA_INSTRUCT.describe() == (
        "fixed canvas of 256, blocks of 32, 256 steps, temperature 0"
    )
    assert "boost" not in ILLADA_BASE.describe() and ILLADA_BASE.think_end_boost == 0
