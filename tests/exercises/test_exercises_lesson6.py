"""Lesson 6's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import pytest
import torch
import torch.nn.functional as F
from checker_cases import assert_fails, ids, solution_and_stub_tests

from minillada.exercises import lesson6
from minillada.sampling.generate import generate

# --- the solutions, as in notebooks/solutions/06_instruction_tuning.ipynb -----------------------


def sft_step(model, optimizer, ids, prompt_lengths, t, u, mask_id, eps=1e-3):
    optimizer.zero_grad()
    B, L = ids.shape
    p = (1 - eps) * t + eps  # (B,)
    is_answer = torch.arange(L)[None, :] >= prompt_lengths[:, None]  # (B, L), EOS padding included
    masked = (u < p[:, None]) & is_answer  # the prompt is never masked
    logits = model(torch.where(masked, mask_id, ids))  # (B, L, V)
    ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")  # (B, L)
    loss = ((ce * masked / p[:, None]).sum(dim=1) / is_answer.sum(dim=1)).mean()
    loss.backward()
    optimizer.step()
    return loss.item()


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
    ("6.1", lesson6.check_sft_step, sft_step, stub),
    ("6.2", lesson6.check_pack_examples, pack_examples, stub),
    ("6.3", lesson6.check_var_generate, var_generate, stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- common mistakes ------------------------------------------------------------------------------


def _step(
    model,
    optimizer,
    ids,
    prompt_lengths,
    t,
    u,
    mask_id,
    eps=1e-3,
    *,
    zero=True,
    mask_prompt=False,
    weight=True,
    denominator="answer",
    train_padding=True,
    update=True,
):
    """The solution with one switch for each typical mistake."""
    if zero:
        optimizer.zero_grad()
    B, L = ids.shape
    p = (1 - eps) * t + eps
    is_answer = torch.arange(L)[None, :] >= prompt_lengths[:, None]
    if not train_padding:  # EOS padding treated as ignored, as a left-to-right SFT would
        is_answer &= ids != lesson6.EOS
    masked = u < p[:, None]
    if not mask_prompt:
        masked &= is_answer
    logits = model(torch.where(masked, mask_id, ids))
    ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none") * masked
    if weight:
        ce = ce / p[:, None]
    if denominator == "answer":
        loss = (ce.sum(dim=1) / is_answer.sum(dim=1)).mean()
    elif denominator == "row":
        loss = (ce.sum(dim=1) / L).mean()
    elif denominator == "masked":
        loss = (ce.sum(dim=1) / masked.sum(dim=1).clamp(min=1)).mean()
    else:  # "pooled": one answer length for the whole batch
        loss = ce.sum() / is_answer.sum()
    loss.backward()
    if update:
        optimizer.step()
    return loss.item()


def step_masking_the_prompt(*args):
    return _step(*args, mask_prompt=True)


def step_dividing_by_the_row_length(*args):
    return _step(*args, denominator="row")


def step_without_the_1_over_p_weight(*args):
    return _step(*args, weight=False)


def step_dividing_by_the_masked_count(*args):
    return _step(*args, denominator="masked")


def step_ignoring_the_eos_padding(*args):
    return _step(*args, train_padding=False)


def step_pooling_the_answer_lengths(*args):
    return _step(*args, denominator="pooled")


def step_without_zeroing_the_gradients(*args):
    return _step(*args, zero=False)


def step_without_the_optimizer_step(*args):
    return _step(*args, update=False)


def step_calling_the_library_loss(model, optimizer, ids, prompt_lengths, t, u, mask_id):
    from minillada.training.sft import llada_sft_loss_from_noise

    optimizer.zero_grad()
    loss = llada_sft_loss_from_noise(model, ids, prompt_lengths, t, u, mask_id)
    loss.backward()
    optimizer.step()
    return loss


def step_returning_nothing(*args):
    _step(*args)


SFT_MISTAKES = [
    (step_masking_the_prompt, r"on case 2/6 \(a prompt of 5 tokens.*expected the loss"),
    (step_dividing_by_the_row_length, r"on case 2/6 \(a prompt of 5 tokens.*expected the loss"),
    (step_without_the_1_over_p_weight, r"on case 3/6 \(t = 0.3.*expected the loss"),
    (step_dividing_by_the_masked_count, r"on case 3/6 \(t = 0.3.*expected the loss"),
    (step_ignoring_the_eos_padding, r"on case 4/6 \(two rows.*7 EOS.*expected the loss"),
    (step_pooling_the_answer_lengths, r"on case 5/6 \(four rows.*expected the loss"),
    (step_without_zeroing_the_gradients,
     r"on case 6/6 \(three steps in a row.*step 2 of 3: the loss agrees, but after the step"),
    (step_without_the_optimizer_step, r"on case 1/6 \(the basics.*the loss agrees, but"),
    (step_calling_the_library_loss, r"your function raised RuntimeError: expected your own loss"),
    (step_returning_nothing, r"on case 1/6 .*expected the loss \(a number or a 0-d tensor\)"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", SFT_MISTAKES, ids=ids(SFT_MISTAKES))
def test_sft_step_mistakes_fail(mistake, match):
    assert_fails(lesson6.check_sft_step, mistake, "6.1", match)


def test_sft_step_may_zero_the_gradients_after_the_update(capsys):
    """Zeroing after the update is as good as before: the checker starts every case clean."""

    def zero_after(model, optimizer, *args):
        loss = _step(model, optimizer, *args, zero=False)
        optimizer.zero_grad()
        return loss

    assert lesson6.check_sft_step(zero_after)


def test_sft_step_leaves_the_library_loss_callable():
    from minillada.training.sft import llada_sft_loss_from_noise

    with pytest.raises(Exception, match="expected your own loss"):
        lesson6.check_sft_step(step_calling_the_library_loss)
    model = lesson6._tiny_model(0, context=32)
    ids_, prompt_lengths, t, u = lesson6._sft_cases()[0][2][0]
    assert torch.isfinite(llada_sft_loss_from_noise(model, ids_, prompt_lengths, t, u, 511))


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
    assert "Exercise 6.4 passed" in out and "only with block 32; McNemar p = " in out
    assert "fewest" not in out and "fewer" not in out  # the conclusion is the learner's
    assert not lesson6.check_block_experiment(stub, model, tok, items, 32)
    assert "Exercise 6.4 not attempted yet" in capsys.readouterr().out
    with pytest.raises(Exception, match="Exercise 6.4: on case block_length=4"):
        lesson6.check_block_experiment(lambda bl: solution(bl, 64), model, tok, items, 32)
    with pytest.raises(Exception, match="expected a dict with the keys"):
        lesson6.check_block_experiment(lambda bl: solution(bl[:2]), model, tok, items, 32)
