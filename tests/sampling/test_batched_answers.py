"""generate_answers: many prompts per forward pass give, at temperature 0, the answers
generate_answer gives one at a time (lesson 6's model in float64), in both samplers, with the
lesson-8 switches and stop strings; each answer is handed over as soon as it is done."""

import pytest
import torch

from minillada.checkpoints.hf import load_hf_checkpoint
from minillada.checkpoints.shipped import INSTRUCT_SHAKESPEARE, shipped_checkpoint
from minillada.data.tokenizer import LLaDATokenizer
from minillada.sampling.answer import GenerationSettings, generate_answer, generate_answers

QUESTIONS = [
    "Who is Romeo?",
    "Write a line about the sea.",
    "What does the king say to his daughters when they answer him?",
    "Name a queen.",
    "Continue: To be, or not to be,",
]


@pytest.fixture(scope="module")
def lesson6():
    folder = shipped_checkpoint(INSTRUCT_SHAKESPEARE)
    model = load_hf_checkpoint(folder, dtype=torch.float64).eval()
    tok = LLaDATokenizer.from_folder(folder)
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True) for q in QUESTIONS
    ]
    return model, tok, prompts


SETTINGS = {
    "variable": GenerationSettings(32, 4, 2, variable_length=True),
    "variable, threshold + dual cache": GenerationSettings(
        32, 4, 2, variable_length=True, threshold=0.6, cache="dual"
    ),
    "fixed": GenerationSettings(16, 8, 8),
    "fixed, prefix cache": GenerationSettings(16, 8, 8, cache="prefix"),
}


@pytest.mark.parametrize("name", list(SETTINGS))
@pytest.mark.parametrize("stops", [(), ("e",)], ids=["no stop string", "stop string"])
def test_batched_answers_equal_answers_alone(lesson6, name, stops):
    model, tok, prompts = lesson6
    settings = SETTINGS[name]
    order = []
    batch = generate_answers(
        model, tok, prompts, settings, batch_size=2, stop_strings=stops,
        on_answer=lambda i, a: order.append(i),
    )  # fmt: skip
    assert sorted(order) == list(range(len(prompts)))
    for prompt, got in zip(prompts, batch, strict=True):
        alone = generate_answer(model, tok, prompt, settings, stop_strings=stops)
        assert torch.equal(got.generated, alone.generated)
        assert (got.text, got.final, got.stopped, got.output_tokens) == (
            alone.text, alone.final, alone.stopped, alone.output_tokens,
        )  # fmt: skip
        assert got.forward_passes == alone.forward_passes
        assert got.positions_processed >= alone.positions_processed  # padding costs, never less


def test_batched_answers_refuse_a_batch_size_below_one(lesson6):
    model, tok, prompts = lesson6
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        generate_answers(model, tok, prompts, SETTINGS["fixed"], batch_size=0)
