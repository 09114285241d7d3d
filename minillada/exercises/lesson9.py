"""Checkers for lesson 9 (notebooks/09_reinforcement_learning.ipynb).

9.1 the group advantages, 9.2 d1's one-step log-probabilities, 9.3 the clipped policy loss with a
k3 KL, 9.4 how the prompt-mask rate moves the one-step estimate (an experiment). The machinery
exercises graduate against ``minillada.training.policy_gradient`` and
``minillada.diffusion.policy``; when an answer disagrees, the checker also tries the usual
mistakes on the same input and names the one the answer matches.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from minillada.data.instructions import encode_example
from minillada.diffusion.policy import OneStepDraw, draw_one_step, one_step_logprobs
from minillada.exercises import (
    Case,
    CheckResult,
    ExerciseFailed,
    agrees,
    assert_same,
    check,
    diagnosing,
    run_experiment,
    seeded,
    short_repr,
)
from minillada.models.llada import LLaDAModel, preset
from minillada.runtime import model_device
from minillada.training.policy_gradient import clipped_policy_loss, group_advantages, k3_kl

MASK, EOS = 511, 510  # the tiny model's special ids


class _Problem:
    """What a learner wrapper returns instead of a result when the answer is unusable (changed
    its input, lost the graph, not a scalar): the compare raises ``message`` under the case's
    label, as check() labels every other disagreement."""

    def __init__(self, message: str):
        self.message = message


def _diagnosing(reference: Callable, mistakes: list, compare: Callable, matches: Callable):
    """``diagnosing`` for lesson 9: an unusable answer (a ``_Problem``) fails with its own message
    before any comparison or mistake is tried."""
    reference_fn, diagnosed = diagnosing(
        reference, mistakes, compare, matches,
        describe=lambda what: f"  Your result is what this mistake gives: {what}.",
    )  # fmt: skip

    def compare_fn(expected, got):
        if isinstance(got, _Problem):
            raise ExerciseFailed(got.message)
        diagnosed(expected, got)

    return reference_fn, compare_fn


# --- Exercise 9.1: group advantages ---------------------------------------------------------------


def _reference_advantages(rewards: torch.Tensor, group_size: int) -> tuple:
    a = group_advantages(rewards, group_size)
    return a.values, a.zero_variance_groups


def _advantage_variant(
    rewards: torch.Tensor, group_size: int, *, scale="none", baseline="group", count="equal",
    rows="consecutive",
) -> tuple:  # fmt: skip
    """(advantages, count) in float64, right (the defaults) or with one of the mistakes below."""
    r = rewards.double().reshape(-1)
    groups = len(r) // group_size
    if rows == "consecutive":
        grouped = r.view(groups, group_size)  # row b is in group b // G
    else:
        grouped = r.view(group_size, groups).T  # row b is in group b % groups
    if baseline == "group":
        centred = grouped - grouped.mean(dim=1, keepdim=True)
    else:
        centred = grouped - r.mean()
    if scale != "none":
        centred = centred / grouped.std(dim=1, keepdim=True, correction=int(scale == "std"))
    flat = int((grouped.std(dim=1) == 0).sum())
    values = centred.reshape(-1) if rows == "consecutive" else centred.T.reshape(-1)
    return values, flat if count == "equal" else groups - flat


ADVANTAGE_MISTAKES = [
    ("dividing by the group's standard deviation (GRPO's paper does; d1 only subtracts the "
     "group's mean)", partial(_advantage_variant, scale="std")),
    ("dividing by the group's population standard deviation (GRPO's paper scales; d1 only "
     "subtracts the group's mean)", partial(_advantage_variant, scale="population")),
    ("subtracting the mean of the whole batch instead of each group's own mean",
     partial(_advantage_variant, baseline="batch")),
    ("counting the groups whose rewards differ (nonzero variance) instead of those whose rewards "
     "are all equal", partial(_advantage_variant, count="nonzero")),
    ("grouping rows b, b + groups, b + 2 groups, ... (interleaved) instead of G consecutive rows",
     partial(_advantage_variant, rows="interleaved")),
]  # fmt: skip


def _compare_advantages(expected: tuple, got) -> None:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ExerciseFailed(
            f"expected a pair (advantages (B,), number of zero-variance groups), got "
            f"{short_repr(got)}"
        )
    values, count = got
    assert_same(expected[0], values, atol=1e-6, rtol=1e-5, path="the advantages")
    if torch.is_tensor(count) and count.numel() == 1:
        count = count.item()
    if not isinstance(count, (int, float)) or count != expected[1]:
        raise ExerciseFailed(
            f"the number of zero-variance groups: expected {expected[1]} (the groups whose "
            f"rewards are all equal), got {short_repr(count)}"
        )


def _matches_advantages(mistake: tuple, got) -> bool:
    """Loose (1e-3): a learner scaling by std + 1e-4, as TRL does, still matches the std mistake;
    and where the mistake divides 0 by 0 (a group whose rewards are all equal) any value matches,
    be it NaN, 0 or whatever the learner's guard put there."""
    values, count = got
    if torch.is_tensor(count) and count.numel() == 1:
        count = count.item()
    if not torch.is_tensor(values) or values.shape != mistake[0].shape or count != mistake[1]:
        return False
    v, m = values.detach().double(), mistake[0]
    return bool((torch.isclose(v, m, atol=1e-3, rtol=1e-3) | m.isnan()).all())


def _rewards(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _advantage_cases() -> list[Case]:
    g = seeded(9)
    eight = (torch.rand(16, generator=g) < 0.4).float()
    eight[8:11] = torch.tensor([1.0, 0.0, 1.0])  # both groups mixed, different means
    eight[:3] = torch.tensor([0.0, 1.0, 0.0])
    return [
        Case("exact-match rewards, 3 groups of 4, every group mixed",
             (_rewards(1, 0, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0), 4)),
        Case("an all-right group and an all-wrong group: their advantages are 0, and 2 groups "
             "give no signal", (_rewards(1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0), 4)),
        Case("partial-credit rewards (0.25, 0.5): 2 groups of 4",
             (_rewards(0.25, 0.5, 0, 1, 0.5, 0.5, 0.25, 0.25), 4)),
        Case("G = 2: 3 groups of 2, one of them all right", (_rewards(1, 0, 1, 1, 0, 1), 2)),
        Case("G = 8: 2 groups of 8", (eight, 8)),
        Case("a single group of 5", (_rewards(0, 1, 0.5, 1, 1), 5)),
    ]  # fmt: skip


def check_group_advantages(fn: Callable) -> CheckResult:
    """Exercise 9.1: fn(rewards (B,) float, group_size G) -> (advantages (B,), the number of
    groups whose rewards are all equal), a group's G completions in consecutive rows; the
    advantage is the reward minus its group's mean (d1: no division by the std). Graduates
    against ``group_advantages(rewards, G)`` (.values, .zero_variance_groups); checks too that
    ``rewards`` is not changed in place."""

    def learner(rewards, group_size):
        before = rewards.clone()
        got = fn(rewards, group_size)
        if not torch.equal(rewards, before):
            return _Problem(
                f"your function changed the rewards in place: expected them to stay "
                f"{before.tolist()}, found {rewards.tolist()}. The caller still needs them (to "
                "log the mean reward, say): compute the advantages in a new tensor."
            )
        return got

    reference, compare = _diagnosing(
        _reference_advantages, ADVANTAGE_MISTAKES, _compare_advantages, _matches_advantages
    )
    return check(
        "Exercise 9.1",
        learner,
        reference,
        _advantage_cases(),
        "minillada.training.policy_gradient.group_advantages",
        compare=compare,
    )


# --- Exercise 9.2: d1's one-step log-probabilities ------------------------------------------------


def _tiny_model(seed: int) -> LLaDAModel:
    """A random 2-layer LLaDA in float64 whose weights are scaled up, so that its predictions are
    sharp and reading the wrong position or the wrong canvas changes the log-probabilities."""
    cfg = preset("tiny", mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS)
    model = LLaDAModel(cfg, generator=seeded(seed)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


def _reference_one_step(model, prompt, completion, mask_id, prompt_masked) -> torch.Tensor:
    return one_step_logprobs(model, prompt, completion, mask_id, OneStepDraw(prompt_masked))


def _one_step_variant(
    model, prompt, completion, mask_id, prompt_masked, *, completion_masked=True,
    prompt_mask=True, read="completion", scores="log_softmax", token="completion",
) -> torch.Tensor:  # fmt: skip
    """(B, C) one-step log-probabilities, right (the defaults) or with one of the mistakes below."""
    P, C = prompt.shape[1], completion.shape[1]
    shown = prompt.masked_fill(prompt_masked, mask_id) if prompt_mask else prompt
    tail = torch.full_like(completion, mask_id) if completion_masked else completion
    with torch.no_grad():
        logits = model(torch.cat([shown, tail], dim=1)).double()  # (B, P + C, V)
    start = {"completion": P, "prompt": 0, "shifted": P - 1}[read]
    logits = logits[:, start : start + C]
    s = F.log_softmax(logits, -1) if scores == "log_softmax" else logits.softmax(-1)
    if token == "argmax":
        return s.max(-1).values
    return s.gather(-1, completion.unsqueeze(-1)).squeeze(-1)


ONE_STEP_MISTAKES = [
    ("leaving the completion's own tokens in the canvas (it must hold C mask tokens after the "
     "prompt: d1 reads every completion token's log-probability with the whole completion "
     "masked)", partial(_one_step_variant, completion_masked=False)),
    ("ignoring prompt_masked (the prompt positions it marks must hold mask_id)",
     partial(_one_step_variant, prompt_mask=False)),
    ("reading the logits of the first C positions (the prompt's) instead of positions "
     "P .. P + C - 1", partial(_one_step_variant, read="prompt")),
    ("reading the logits one position early, P - 1 .. P + C - 2 (a GPT's next-token habit; a "
     "masked diffusion model predicts each position at that position)",
     partial(_one_step_variant, read="shifted")),
    ("softmax probabilities instead of log-probabilities (log_softmax)",
     partial(_one_step_variant, scores="softmax")),
    ("the log-probability of the most likely token (the argmax) instead of the completion's own "
     "token", partial(_one_step_variant, token="argmax")),
]  # fmt: skip


def _compare_one_step(expected: torch.Tensor, got) -> None:
    assert_same(expected.detach(), got.detach() if torch.is_tensor(got) else got, 1e-9, 1e-9)


def _one_step_case(seed: int, B: int, P: int, C: int, p_mask: float) -> tuple:
    g = seeded(seed)
    prompt = torch.randint(0, EOS, (B, P), generator=g)
    completion = torch.randint(0, EOS, (B, C), generator=g)
    masked = torch.rand(B, P, generator=g) < p_mask
    return _tiny_model(seed), prompt, completion, MASK, masked


def check_one_step_logprobs(fn: Callable) -> CheckResult:
    """Exercise 9.2: fn(model, prompt (B, P), completion (B, C), mask_id, prompt_masked (B, P)
    bool) -> (B, C): the log-probability of each completion token from one forward pass of the
    canvas [prompt with the prompt_masked positions set to mask_id, then C mask tokens], read at
    the completion positions. Graduates against ``one_step_logprobs(model, prompt, completion,
    mask_id, OneStepDraw(prompt_masked))`` on a tiny float64 LLaDA (atol 1e-9), and requires the
    result to keep the graph: the policy gradient differentiates it."""
    cases = [
        Case("3 rows, a 6-token prompt and a 5-token completion, no prompt token masked "
             "(p_mask = 0: the estimate is deterministic)", _one_step_case(0, 3, 6, 5, 0.0)),
        Case("the same sizes, the prompt masked by a seeded draw at p_mask = 0.3",
             _one_step_case(1, 3, 6, 5, 0.3)),
        Case("2 rows, a 3-token prompt, a 7-token completion, the whole prompt masked",
             _one_step_case(2, 2, 3, 7, 1.0)),
    ]  # fmt: skip

    def learner(model, prompt, completion, mask_id, prompt_masked):
        with torch.enable_grad():
            got = fn(model, prompt, completion, mask_id, prompt_masked)
        if torch.is_tensor(got) and not got.requires_grad:
            return _Problem(
                "expected log-probabilities that keep the graph, got a result that does not "
                "require grad: it was computed under torch.no_grad() or detached. The policy "
                "gradient differentiates these log-probabilities with respect to the model's "
                "weights, so return them with the graph (the caller wraps the old and the "
                "reference policy's calls in no_grad, not you)."
            )
        return got

    reference, compare = _diagnosing(
        _reference_one_step, ONE_STEP_MISTAKES, _compare_one_step, agrees(_compare_one_step)
    )
    return check(
        "Exercise 9.2",
        learner,
        reference,
        cases,
        "minillada.diffusion.policy.one_step_logprobs",
        compare=compare,
    )


# --- Exercise 9.3: the clipped policy loss with a k3 KL -------------------------------------------


def _loss_and_grad(loss_fn: Callable, logp, old_logp, advantages, clip_eps, ref_logp, beta):
    """(loss, d loss / d logp) of ``loss_fn`` on a fresh leaf copy of logp."""
    leaf = logp.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(leaf, old_logp, advantages, clip_eps, ref_logp, beta)
        (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def _reference_loss(logp, old_logp, advantages, clip_eps, ref_logp, beta):
    return clipped_policy_loss(logp, old_logp, advantages, None, clip_eps, ref_logp, beta)[0]


def _loss_variant(
    logp, old_logp, advantages, clip_eps, ref_logp, beta, *, pick="min", reduce="tokens",
    kl_sign=1.0, kl="ref - logp",
):  # fmt: skip
    """The loss, right (the defaults) or with one of the mistakes below."""
    ratio = torch.exp(logp - old_logp)
    a = advantages.to(logp.dtype)[:, None]
    unclipped, clipped = ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a
    if pick == "clipped":
        objective = clipped
    else:
        objective = (torch.minimum if pick == "min" else torch.maximum)(unclipped, clipped)
    if ref_logp is None or kl == "none":
        penalty = torch.zeros_like(logp)
    else:
        penalty = k3_kl(logp, ref_logp) if kl == "ref - logp" else k3_kl(ref_logp, logp)
    per_token = objective - kl_sign * beta * penalty
    return -(per_token.sum(1).mean() if reduce == "sums" else per_token.mean())


LOSS_MISTAKES = [  # the clipped term alone first: where it and max differ from min, they agree
    ("the clipped term alone, clip(ratio) A, without the min with the unclipped ratio A: where "
     "A > 0 and the ratio fell below 1 - eps (or A < 0 and it rose above 1 + eps) the min keeps "
     "the unclipped term, whose gradient is not 0", partial(_loss_variant, pick="clipped")),
    ("max(unclipped, clipped) instead of min: the clip must only ever make the objective more "
     "pessimistic", partial(_loss_variant, pick="max")),
    ("the mean over completions of each completion's sum over its tokens, instead of the mean "
     "over all B*C tokens", partial(_loss_variant, reduce="sums")),
    ("adding the KL to the objective (the loss must be -(objective - beta KL): the KL is a "
     "penalty)", partial(_loss_variant, kl_sign=-1.0)),
    ("the k3 KL with its direction swapped: k3 uses r = ref_logp - logp, exp(r) - r - 1",
     partial(_loss_variant, kl="logp - ref")),
    ("leaving out the KL term (beta KL)", partial(_loss_variant, kl="none")),
]  # fmt: skip


def _compare_loss(expected: tuple, got: tuple) -> None:
    assert_same(expected[0], got[0], atol=1e-10, rtol=1e-10, path="the loss")
    try:
        assert_same(expected[1], got[1], atol=1e-10, rtol=1e-10,
                    path="the gradient of the loss with respect to logp")  # fmt: skip
    except ExerciseFailed as err:
        raise ExerciseFailed(
            f"{err}\n  The loss's value agrees, but not its gradient, which is what the optimizer "
            "follows: inside the clip range the gradient flows through the ratio (both terms "
            "are equal there), and it is 0 only where the min picks the clipped term."
        ) from None


def _loss_case(seed, B, C, shift: tuple, signs: str, beta=0.0, with_ref=False) -> tuple:
    """logp = old_logp + a shift drawn in ``shift`` (so the ratio exp(shift) falls where the case
    wants it), advantages of the ``signs`` ("+", "-" or "mixed"), float64."""
    g = seeded(seed)
    old = -(0.5 + 2.5 * torch.rand(B, C, generator=g, dtype=torch.float64))
    lo, hi = shift
    logp = old + lo + (hi - lo) * torch.rand(B, C, generator=g, dtype=torch.float64)
    a = 0.2 + torch.rand(B, generator=g, dtype=torch.float64)
    if signs == "-":
        a = -a
    elif signs == "mixed":
        a = a * torch.tensor([(-1.0) ** b for b in range(B)], dtype=torch.float64)
    ref = logp + 0.3 * torch.randn(B, C, generator=g, dtype=torch.float64) if with_ref else None
    return logp, old, a, 0.2, ref, beta


def check_clipped_loss(fn: Callable) -> CheckResult:
    """Exercise 9.3: fn(logp (B, C), old_logp (B, C), advantages (B,), clip_eps, ref_logp (B, C)
    or None, beta) -> the scalar loss of d1's token-level clipped objective with the k3 KL to the
    reference, averaged over all B*C tokens. Graduates against ``clipped_policy_loss(logp,
    old_logp, advantages, None, clip_eps, ref_logp, beta)[0]``, comparing both the loss and its
    gradient with respect to logp (float64, atol 1e-10): a clip that gets the value right and the
    gradient wrong fails."""
    cases = [
        Case("every ratio inside [1 - eps, 1 + eps] = [0.8, 1.2], advantages of both signs, no "
             "reference (beta 0, ref_logp None)", _loss_case(0, 4, 5, (-0.15, 0.15), "mixed")),
        Case("A > 0 and every ratio above 1 + eps: clipped, the gradient is 0 there",
             _loss_case(1, 3, 4, (0.3, 0.6), "+")),
        Case("A < 0 and every ratio below 1 - eps: clipped, the gradient is 0 there",
             _loss_case(2, 3, 4, (-0.6, -0.3), "-")),
        Case("A > 0 and every ratio below 1 - eps: NOT clipped (the min keeps the unclipped "
             "ratio A, smaller than the clipped one), the gradient is not 0",
             _loss_case(3, 3, 4, (-0.6, -0.3), "+")),
        Case("A < 0 and every ratio above 1 + eps: NOT clipped either",
             _loss_case(4, 3, 4, (0.3, 0.6), "-")),
        Case("ratios on both sides of the clip range, a reference policy and beta 0.04",
             _loss_case(5, 4, 6, (-0.5, 0.5), "mixed", beta=0.04, with_ref=True)),
    ]  # fmt: skip

    def learner(logp, old_logp, advantages, clip_eps, ref_logp, beta):
        leaf = logp.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = fn(leaf, old_logp, advantages, clip_eps, ref_logp, beta)
        if not torch.is_tensor(loss) or loss.numel() != 1:
            return _Problem(
                f"expected the loss, one number (a 0-d tensor, the mean over all B*C tokens), "
                f"got {short_repr(loss)}"
            )
        if not loss.requires_grad:
            return _Problem(
                "expected a loss that keeps the graph, got one that does not require grad: it "
                "was computed under torch.no_grad() or detached. The optimizer needs its gradient "
                "with respect to logp."
            )
        (grad,) = torch.autograd.grad(loss.reshape(()), leaf, allow_unused=True)
        return loss.detach().reshape(()), torch.zeros_like(leaf) if grad is None else grad

    reference, compare = _diagnosing(
        partial(_loss_and_grad, _reference_loss),
        [(what, partial(_loss_and_grad, m)) for what, m in LOSS_MISTAKES],
        _compare_loss,
        agrees(_compare_loss),
    )
    return check(
        "Exercise 9.3",
        learner,
        reference,
        cases,
        "minillada.training.policy_gradient.clipped_policy_loss",
        compare=compare,
    )


# --- Exercise 9.4: the prompt-mask rate and the one-step estimate (an experiment) ---------------


def prompt_mask_measurements(
    model, tokenizer, items, p_masks, draws: int
) -> dict[float, dict[str, tuple[float, float]]]:
    """Exercise 9.4's measurement, {p_mask: {task: (mean, sd)}} in nats, for ``items`` (one per
    task). For an item, the prompt and the completion are ``encode_example(tokenizer, item)``: the
    chat-templated prompt, and the reference answer as the SFT data encodes it, its tokens and
    <|eot_id|> (without the EOS each SFT recipe appends). Draw j = 0 .. draws - 1 is
    ``draw_one_step(keep, p_mask, generator=torch.Generator().manual_seed(j))`` with keep all
    ones (1, P); its value is the sum over the completion tokens of ``one_step_logprobs`` (no
    prompt_keep), under no_grad, in the model's dtype. mean and sd are over the draws, sd the
    sample standard deviation (ddof 1). The draws of an item run as one batch of ``draws`` rows,
    which changes only the last bits of float32 sums."""
    if draws < 2:
        raise ValueError(f"draws must be at least 2 for a sample standard deviation, got {draws}")
    tasks = [item.task for item in items]
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"expected one item per task, got the tasks {tasks}")
    device = model_device(model)
    out: dict[float, dict[str, tuple[float, float]]] = {}
    for p_mask in p_masks:
        out[p_mask] = {}
        for item in items:
            prompt_ids, answer_ids = encode_example(tokenizer, item)
            prompt = torch.tensor([prompt_ids], device=device)
            completion = torch.tensor([answer_ids], device=device)
            keep = torch.ones_like(prompt, dtype=torch.bool)
            draws_j = [
                draw_one_step(keep, p_mask, generator=torch.Generator().manual_seed(j))
                for j in range(draws)
            ]
            masked = torch.cat([d.prompt_masked for d in draws_j])  # (draws, P)
            with torch.no_grad():
                logp = one_step_logprobs(
                    model, prompt.expand(draws, -1), completion.expand(draws, -1),
                    tokenizer.mask_id, OneStepDraw(masked),
                )  # (draws, C)  # fmt: skip
            values = logp.sum(dim=1).double().tolist()
            out[p_mask][item.task] = (statistics.mean(values), statistics.stdev(values))
    return out


def _pair(got) -> tuple[float, float] | None:
    try:
        mean, sd = (float(v) for v in got)
    except (TypeError, ValueError):
        return None
    return mean, sd


def check_prompt_mask_experiment(
    fn: Callable, model, tokenizer, items, p_masks, draws: int
) -> CheckResult:
    """Exercise 9.4: fn(p_masks) -> {p_mask: {task: (mean, sd)}}: for each item of ``items`` (one
    per task), the one-step sequence log-probability of its reference answer over ``draws`` prompt
    masks, as ``prompt_mask_measurements`` measures it (seeds 0 .. draws - 1, the sum over the
    completion tokens, sd with ddof 1). The checker repeats the measurement, compares every number
    within 1e-4 of the size of the values (|mean| + sd) plus 1e-5, and prints the table; it draws
    no conclusion (that is the learner's). Why 1e-4: float32 forwards batched another way, or
    run on another CPU's kernels, differ by up to 2e-6 of it (measured with
    ATEN_CPU_CAPABILITY=default), and the smallest mistake the check exists for, the sample s.d.
    with ddof 0, moves a value by 7% of it."""
    got = run_experiment("Exercise 9.4", fn, list(p_masks))
    if got is None:
        return CheckResult(False)
    expected = prompt_mask_measurements(model, tokenizer, items, p_masks, draws)
    tasks = [item.task for item in items]
    recipe = (
        f"For each item and each draw j = 0 .. {draws - 1}: mask the prompt with draw_one_step("
        "keep, p_mask, generator=torch.Generator().manual_seed(j)), keep all ones of shape (1, P); "
        "sum one_step_logprobs over the completion's tokens (encode_example's answer ids, "
        "<|eot_id|> included); then the mean and the sample standard deviation (ddof 1) over the "
        f"{draws} draws."
    )
    for p_mask in p_masks:
        row = got[p_mask]
        if not isinstance(row, dict) or sorted(row) != sorted(tasks):
            raise ExerciseFailed(
                f"Exercise 9.4: p_mask {p_mask}: expected a dict {{task: (mean, sd)}} with the "
                f"tasks {tasks}, got {short_repr(row)}"
            )
        for task in tasks:
            mean, sd = expected[p_mask][task]
            pair = _pair(row[task])
            if pair is None:
                raise ExerciseFailed(
                    f"Exercise 9.4: p_mask {p_mask}, task {task!r}: expected a pair (mean, sd), "
                    f"got {short_repr(row[task])}"
                )
            tol = 1e-4 * (abs(mean) + sd) + 1e-5  # see the docstring
            if not (abs(pair[0] - mean) <= tol and abs(pair[1] - sd) <= tol):
                raise ExerciseFailed(
                    f"Exercise 9.4: p_mask {p_mask}, task {task!r}: expected mean {mean:.6f} and "
                    f"s.d. {sd:.6f} nats, got {pair[0]:.6f} and {pair[1]:.6f}. {recipe}"
                )
    print(
        f"Exercise 9.4 passed: the one-step log-probability of {len(items)} reference answers at "
        f"{len(p_masks)} prompt-mask rates, {draws} draws each (nats, mean ± s.d. over the draws):"
    )
    width = max(16, *(len(t) + 2 for t in tasks))
    print("  p_mask" + "".join(f"{t:>{width}}" for t in tasks))
    for p_mask in p_masks:
        cells = "".join(
            f"{f'{m:.2f} ± {s:.2f}':>{width}}" for m, s in (expected[p_mask][t] for t in tasks)
        )
        print(f"  {p_mask:6.2f}{cells}")
    return CheckResult(True)
