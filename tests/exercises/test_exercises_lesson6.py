"""Lesson 6's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import pytest
import torch
import torch.nn.functional as F
from checker_cases import assert_fails, ids, solution_and_stub_tests

from minillada.exercises import lesson6
from minillada.sampling.generate import generate

# --- the solutions, as in notebooks/solutions/06_instruction_tuning.ipynb -----------------------


def llada_sft_loss(model, ids, prompt_lengths, t, u, mask_id, eps=1e-3):
    B, L = ids.shape
    p = (1 - eps) * t + eps  # (B,)
    is_prompt = torch.arange(L)[None, :] < prompt_lengths[:, None]  # (B, L)
    masked = (u < p[:, None]) & ~is_prompt
    xt = torch.where(masked, mask_id, ids)
    logits = model(xt).double()  # (B, L, V)
    ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")  # (B, L)
    answer_lengths = (L - prompt_lengths).double()
    return ((ce * masked / p[:, None]).sum(dim=1) / answer_lengths).mean()


def pack_examples(prompts, answers, eos_id, window):
    stream = [tok for p, a in zip(prompts, answers, strict=True) for tok in [*p, *a, eos_id]]
    n = len(stream) // window
    return torch.tensor(stream[: n * window]).view(n, window)


def var_generate(model, prompt, gen_length, block_length, steps, mask_id, stop_ids):
    P = prompt.shape[1]
    budget = min(gen_length, (model.config.context_length - P) // block_length * block_length)
    x, passes = prompt, 0
    for _ in range(budget // block_length):
        x = generate(model, x, block_length, block_length, steps, mask_id)
        passes += steps
        if any(tok in stop_ids for tok in x[0, P:].tolist()):
            break
    return x, passes


def stub(*args, **kwargs):
    raise NotImplementedError("Exercise 6.x")


EXERCISES = [
    ("6.1", lesson6.check_llada_sft_loss, llada_sft_loss, stub),
    ("6.2", lesson6.check_pack_examples, pack_examples, stub),
    ("6.3", lesson6.check_var_generate, var_generate, stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- common mistakes ------------------------------------------------------------------------------


def loss_with_the_prompt_masked(model, ids, prompt_lengths, t, u, mask_id, eps=1e-3):
    return llada_sft_loss(model, ids, torch.zeros_like(prompt_lengths), t, u, mask_id, eps)


def loss_over_all_answer_tokens_of_the_batch(model, ids, prompt_lengths, t, u, mask_id, eps=1e-3):
    B, L = ids.shape
    p = (1 - eps) * t + eps
    is_prompt = torch.arange(L)[None, :] < prompt_lengths[:, None]
    masked = (u < p[:, None]) & ~is_prompt
    logits = model(torch.where(masked, mask_id, ids)).double()
    ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    return (ce * masked / p[:, None]).sum() / (L - prompt_lengths).sum()  # one pooled answer length


@pytest.mark.parametrize(
    "mistake", [loss_with_the_prompt_masked, loss_over_all_answer_tokens_of_the_batch],
    ids=ids([loss_with_the_prompt_masked, loss_over_all_answer_tokens_of_the_batch]),
)  # fmt: skip
def test_sft_loss_mistakes_fail(mistake):
    assert_fails(lesson6.check_llada_sft_loss, mistake, "6.1", "case")


def pack_without_eos(prompts, answers, eos_id, window):
    stream = [tok for p, a in zip(prompts, answers, strict=True) for tok in [*p, *a]]
    n = len(stream) // window
    return torch.tensor(stream[: n * window]).view(n, window)


def pack_keeping_the_tail(prompts, answers, eos_id, window):
    stream = [tok for p, a in zip(prompts, answers, strict=True) for tok in [*p, *a, eos_id]]
    stream += [eos_id] * (-len(stream) % window)
    return torch.tensor(stream).view(-1, window)


@pytest.mark.parametrize("mistake", [pack_without_eos, pack_keeping_the_tail],
                         ids=ids([pack_without_eos, pack_keeping_the_tail]))  # fmt: skip
def test_pack_mistakes_fail(mistake):
    assert_fails(lesson6.check_pack_examples, mistake, "6.2", "case")


def var_generate_without_the_context_clip(model, prompt, gen_length, block_length, steps,
                                          mask_id, stop_ids):  # fmt: skip
    P = prompt.shape[1]
    x, passes = prompt, 0
    for _ in range(gen_length // block_length):
        if x.shape[1] + block_length > model.config.context_length:
            break
        x = generate(model, x, block_length, block_length, steps, mask_id)
        passes += steps + 1  # counts one pass too many per block
        if any(tok in stop_ids for tok in x[0, P:].tolist()):
            break
    return x, passes


def var_generate_clip_not_in_whole_blocks(model, prompt, gen_length, block_length, steps,
                                          mask_id, stop_ids):  # fmt: skip
    """Clips the budget to the room left but not down to whole blocks: ceil instead of floor, so
    a prompt that leaves 21 positions gets 3 blocks of 8 (24 tokens, past the context)."""
    P = prompt.shape[1]
    budget = min(gen_length, model.config.context_length - P)
    x, passes = prompt, 0
    for _ in range(-(-budget // block_length)):
        x = generate(model, x, block_length, block_length, steps, mask_id)
        passes += steps
        if any(tok in stop_ids for tok in x[0, P:].tolist()):
            break
    return x, passes


VAR_MISTAKES = [
    (var_generate_without_the_context_clip, "case"),
    (var_generate_clip_not_in_whole_blocks, r"your function raised ValueError: The canvas has 67 "
     r"positions but the model's context is 64 tokens.*\n  on case 4/4: a 43-token prompt"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", VAR_MISTAKES, ids=ids(VAR_MISTAKES))
def test_var_generate_mistakes_fail(mistake, match):
    assert_fails(lesson6.check_var_generate, mistake, "6.3", match)


# --- Exercise 6.4, an experiment on a model: a random stand-in with a chat tokenizer --------------


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    from minillada.data import bpe
    from minillada.data.instructions import Example
    from minillada.data.tokenizer import LLaDATokenizer
    from minillada.models.llada import LLaDAModel, preset

    text = "How many words? one two three. Repeat after me: to be or not to be. " * 20
    folder = bpe.save_tokenizer(bpe.train_bpe_fast(text, 300), tmp_path_factory.mktemp("tok"))
    tok = LLaDATokenizer.from_folder(folder)
    cfg = preset("tiny", vocab_size=300, embedding_size=300, mask_token_id=tok.mask_id,
                 eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)  # fmt: skip
    model = LLaDAModel(cfg, generator=torch.Generator().manual_seed(0)).eval()
    items = [Example("count", "How many words? to be", "two"),
             Example("repeat", "Repeat after me: not to be", "not to be")]  # fmt: skip
    return model, tok, items


def test_block_experiment(standin, capsys):
    from minillada.evaluation.instructions import evaluate_instructions

    model, tok, items = standin

    def solution(block_lengths, budget=32):
        out = {}
        for b in block_lengths:
            s = evaluate_instructions(model, tok, items, "variable", budget, b, progress=False)[
                "all"
            ]
            out[b] = (s.accuracy, s.mean_forward_passes)
        return out

    assert lesson6.check_block_experiment(solution, model, tok, items, 32)
    out = capsys.readouterr().out
    assert "Exercise 6.4 passed" in out and "the fewest passes inside it: block" in out
    assert not lesson6.check_block_experiment(stub, model, tok, items, 32)
    assert "Exercise 6.4 not attempted yet" in capsys.readouterr().out
    with pytest.raises(Exception, match="Exercise 6.4: on case block_length=4"):
        lesson6.check_block_experiment(lambda bl: solution(bl, 64), model, tok, items, 32)
    with pytest.raises(Exception, match="expected a dict with the keys"):
        lesson6.check_block_experiment(lambda bl: solution(bl[:2]), model, tok, items, 32)
