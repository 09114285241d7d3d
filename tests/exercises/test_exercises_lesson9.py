"""Lesson 9's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import statistics

import pytest
import torch
from checker_cases import assert_fails, solution_and_stub_tests

from minillada.checkpoints.shipped import load_instruct_shakespeare
from minillada.data.downloads import load_text
from minillada.data.instructions import TASKS, encode_example, make_instruction_data
from minillada.diffusion.policy import draw_one_step
from minillada.diffusion.policy import one_step_logprobs as policy_logprobs
from minillada.exercises import ExerciseFailed, lesson9

# --- the solutions, as a learner writes them ------------------------------------------------------


def group_advantages(rewards, group_size, mistake=None):
    if mistake == "interleaved":
        grouped = rewards.view(group_size, -1).T  # row b in group b % groups
    else:
        grouped = rewards.view(-1, group_size)  # (groups, G)
    if mistake == "in_place":
        grouped -= grouped.mean(dim=1, keepdim=True)  # a view: changes the caller's rewards
        centred = grouped.clone()
    elif mistake == "batch_mean":
        centred = grouped - rewards.mean()
    else:
        centred = grouped - grouped.mean(dim=1, keepdim=True)
    if mistake == "std":  # GRPO's paper; 0 / 0 = NaN in an all-equal group
        centred = centred / grouped.std(dim=1, keepdim=True)
    if mistake == "std_trl":  # TRL's guard: std + 1e-4
        centred = centred / (grouped.std(dim=1, keepdim=True) + 1e-4)
    flat = grouped.max(dim=1).values == grouped.min(dim=1).values
    count = int((~flat if mistake == "nonzero" else flat).sum())
    values = centred.T.reshape(-1) if mistake == "interleaved" else centred.reshape(-1)
    if mistake == "tensor_count":  # a 0-d tensor for the count is fine
        return values, torch.tensor(count)
    return values, count


def one_step_logprobs(model, prompt, completion, mask_id, prompt_masked, mistake=None):
    P, C = prompt.shape[1], completion.shape[1]
    shown = (
        prompt if mistake == "prompt_mask_ignored" else prompt.masked_fill(prompt_masked, mask_id)
    )
    tail = completion if mistake == "completion_unmasked" else torch.full_like(completion, mask_id)
    canvas = torch.cat([shown, tail], dim=1)
    if mistake == "no_grad":
        with torch.no_grad():
            logits = model(canvas)
    else:
        logits = model(canvas)  # (B, P + C, V)
    start = {"prompt_positions": 0, "shifted": P - 1}.get(mistake, P)
    logits = logits[:, start : start + C]
    if mistake == "softmax":
        scores = logits.softmax(dim=-1)
    else:
        scores = logits.log_softmax(dim=-1)
    if mistake == "argmax":
        return scores.max(dim=-1).values
    out = scores.gather(-1, completion.unsqueeze(-1)).squeeze(-1)
    return out.detach() if mistake == "detached" else out


def clipped_loss(logp, old_logp, advantages, clip_eps, ref_logp, beta, mistake=None):
    ratio = torch.exp(logp - old_logp)
    a = advantages[:, None]
    clipped_ratio = ratio.clamp(1 - clip_eps, 1 + clip_eps)
    if mistake == "detached_clip":  # the same value; inside the range the min's tie splits the grad
        clipped_ratio = clipped_ratio.detach()
    unclipped, clipped = ratio * a, clipped_ratio * a
    if mistake == "max":
        objective = torch.maximum(unclipped, clipped)
    elif mistake == "clamp_only":
        objective = clipped
    else:
        objective = torch.minimum(unclipped, clipped)
    if ref_logp is not None and mistake != "no_kl":
        r = logp - ref_logp if mistake == "kl_swapped" else ref_logp - logp
        kl = torch.exp(r) - r - 1
        objective = objective + beta * kl if mistake == "kl_added" else objective - beta * kl
    if mistake == "sums":
        return -objective.sum(dim=1).mean()
    if mistake == "per_token":
        return -objective
    if mistake == "number":
        return -objective.mean().item()
    return -objective.mean()


def stub(*args, **kwargs):
    raise NotImplementedError("Exercise 9.x")


EXERCISES = [
    ("9.1", lesson9.check_group_advantages, group_advantages, stub),
    ("9.2", lesson9.check_one_step_logprobs, one_step_logprobs, stub),
    ("9.3", lesson9.check_clipped_loss, clipped_loss, stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


def attempt(solution, mistake):
    return lambda *args: solution(*args, mistake=mistake)


# --- 9.1 ------------------------------------------------------------------------------------------


GIVES = r"case 1/6 \(.*[\s\S]*\n  Your result is what this mistake gives: "
ADVANTAGE_MISTAKES = [
    ("std", GIVES + r"dividing by the group's standard deviation \(GRPO's paper"),
    ("std_trl", GIVES + r"dividing by the group's standard deviation"),
    ("batch_mean", GIVES + r"subtracting the mean of the whole batch"),
    ("nonzero", r"case 1/6 \(.*\n.*zero-variance groups: expected 0[\s\S]*counting the groups"),
    ("interleaved", GIVES + r"grouping rows b, b \+ groups"),
    ("in_place", r"case 1/6 \(.*\):\nyour function changed the rewards in place: expected"),
]


@pytest.mark.parametrize(
    "mistake, match", ADVANTAGE_MISTAKES, ids=[m for m, _ in ADVANTAGE_MISTAKES]
)
def test_an_advantage_mistake_fails_and_is_named(mistake, match):
    assert_fails(lesson9.check_group_advantages, attempt(group_advantages, mistake), "9.1", match)


def test_the_count_may_be_a_tensor(capsys):
    assert lesson9.check_group_advantages(attempt(group_advantages, "tensor_count"))
    assert "Exercise 9.1 passed" in capsys.readouterr().out


def test_an_unknown_advantage_mistake_fails_without_a_diagnosis():
    def doubled(rewards, group_size):
        values, count = group_advantages(rewards, group_size)
        return 2 * values, count

    message = assert_fails(lesson9.check_group_advantages, doubled, "9.1", r"case 1/6 .*\n.*adv")
    assert "Your result is what" not in message


# --- 9.2 ------------------------------------------------------------------------------------------


ONE_STEP_MISTAKES = [
    ("completion_unmasked", r"case 1/3 [\s\S]*leaving the completion's own tokens in the canvas"),
    ("prompt_mask_ignored", r"case 2/3 \(.*p_mask = 0.3\)[\s\S]*ignoring prompt_masked"),
    ("prompt_positions", r"case 1/3 [\s\S]*the first C positions \(the prompt's\)"),
    ("shifted", r"case 1/3 [\s\S]*one position early, P - 1 .. P \+ C - 2 \(a GPT's"),
    ("softmax", r"case 1/3 [\s\S]*softmax probabilities instead of log-probabilities"),
    ("argmax", r"case 1/3 [\s\S]*the most likely token \(the argmax\)"),
    ("no_grad", r"case 1/3 \(.*\):\nexpected log-probabilities that keep the graph, got a result"),
    ("detached", r"case 1/3 \(.*\):\nexpected log-probabilities that keep the graph, got a result"),
]


@pytest.mark.parametrize("mistake, match", ONE_STEP_MISTAKES, ids=[m for m, _ in ONE_STEP_MISTAKES])
def test_a_one_step_mistake_fails_and_is_named(mistake, match):
    assert_fails(lesson9.check_one_step_logprobs, attempt(one_step_logprobs, mistake), "9.2", match)


# --- 9.3 ------------------------------------------------------------------------------------------


LOSS_MISTAKES = [
    ("max", r"case 2/6 \(A > 0 and every ratio above[\s\S]*max\(unclipped, clipped\) instead"),
    ("clamp_only", r"case 4/6 \(A > 0 and every ratio below 1 - eps: NOT clipped[\s\S]*the "
                   r"clipped term alone"),
    ("sums", r"case 1/6 [\s\S]*each completion's sum over its tokens"),
    ("kl_added", r"case 6/6 [\s\S]*adding the KL to the objective"),
    ("kl_swapped", r"case 6/6 [\s\S]*the k3 KL with its direction swapped"),
    ("no_kl", r"case 6/6 [\s\S]*leaving out the KL term"),
    ("detached_clip", r"case 1/6 .*\n.*the gradient of the loss with respect to logp: values "
                      r"differ[\s\S]*The loss's value agrees, but not its gradient"),
    ("per_token", r"case 1/6 \(.*\):\nexpected the loss, one number"),
    ("number", r"case 1/6 \(.*\):\nexpected the loss, one number .*got -?0\.\d+"),
]  # fmt: skip


@pytest.mark.parametrize("mistake, match", LOSS_MISTAKES, ids=[m for m, _ in LOSS_MISTAKES])
def test_a_loss_mistake_fails_and_is_named(mistake, match):
    assert_fails(lesson9.check_clipped_loss, attempt(clipped_loss, mistake), "9.3", match)


def test_a_detached_loss_is_refused():
    def detached(*args):
        return clipped_loss(*args).detach()

    assert_fails(
        lesson9.check_clipped_loss,
        detached,
        "9.3",
        r"case 1/6 .*\nexpected a loss that keeps the graph, got one that does not",
    )


# --- 9.4: the experiment, on lesson 6's model -----------------------------------------------------

P_MASKS, DRAWS = (0.0, 0.3), 4


@pytest.fixture(scope="module")
def instruct(tinyshakespeare):
    model, tokenizer, _ = load_instruct_shakespeare()
    held = make_instruction_data(load_text(), 20, 20, seed=0).held_out
    items = [next(e for e in held if e.task == task) for task in TASKS]
    return model, tokenizer, items


def measure(model, tokenizer, items, mistake=None):
    """The learner's experiment, one forward per draw (the checker batches its draws)."""

    def sweep(p_masks):
        out = {}
        for p_mask in p_masks:
            out[p_mask] = {}
            for item in items:
                prompt_ids, answer_ids = encode_example(tokenizer, item)
                if mistake == "no_eot":
                    answer_ids = answer_ids[:-1]
                prompt, completion = torch.tensor([prompt_ids]), torch.tensor([answer_ids])
                keep = torch.ones_like(prompt, dtype=torch.bool)
                values = []
                for j in range(DRAWS):
                    seed = j + 1 if mistake == "seeds_from_1" else j
                    draw = draw_one_step(keep, p_mask, torch.Generator().manual_seed(seed))
                    with torch.no_grad():
                        logp = policy_logprobs(model, prompt, completion, tokenizer.mask_id, draw)
                    values.append((logp.mean() if mistake == "token_mean" else logp.sum()).item())
                sd = statistics.pstdev(values) if mistake == "ddof0" else statistics.stdev(values)
                out[p_mask][item.task] = (statistics.mean(values), sd)
        return out

    return sweep


def test_the_experiment_passes_with_the_measurement_and_prints_the_table(capsys, instruct):
    model, tokenizer, items = instruct
    fn = measure(model, tokenizer, items)
    assert lesson9.check_prompt_mask_experiment(fn, model, tokenizer, items, P_MASKS, DRAWS)
    out = capsys.readouterr().out
    assert "Exercise 9.4 passed: the one-step log-probability of 5 reference answers at 2" in out
    lines = out.splitlines()
    assert lines[1].split() == ["p_mask", *TASKS]
    assert lines[2].startswith("    0.00") and lines[3].startswith("    0.30")
    assert lines[2].count("± 0.00") == 5  # p_mask 0: the estimate is deterministic
    assert lines[3].count("±") == 5 and len(lines) == 4
    for word in ("noisier", "lower", "higher", "better", "worse", "so "):  # no verdict
        assert word not in out


def test_the_reference_measurement_is_the_recipe(instruct):
    model, tokenizer, items = instruct
    expected = lesson9.prompt_mask_measurements(model, tokenizer, items, P_MASKS, DRAWS)
    got = measure(model, tokenizer, items)(list(P_MASKS))
    assert sorted(expected) == sorted(P_MASKS)
    for p in P_MASKS:
        assert list(expected[p]) == list(TASKS)
        for task in TASKS:
            # one forward per draw against the checker's batch: the checker's tolerance
            assert expected[p][task] == pytest.approx(got[p][task], rel=1e-4, abs=1e-5)
    assert all(sd == 0.0 for _, sd in expected[0.0].values())
    assert all(sd > 0.0 for _, sd in expected[0.3].values())
    with pytest.raises(ValueError, match="draws must be at least 2"):
        lesson9.prompt_mask_measurements(model, tokenizer, items, P_MASKS, 1)


EXPERIMENT_MISTAKES = ["seeds_from_1", "token_mean", "ddof0", "no_eot"]


@pytest.mark.parametrize("mistake", EXPERIMENT_MISTAKES)
def test_an_experiment_mistake_fails_with_the_recipe(instruct, mistake):
    model, tokenizer, items = instruct
    fn = measure(model, tokenizer, items, mistake)
    with pytest.raises(ExerciseFailed, match=r"^Exercise 9.4: p_mask 0\.\d, task '\w+': expected "
                       r"mean -?\d+\.\d{6} and s\.d\. \d+\.\d{6} nats, got [\s\S]*manual_seed\(j\)"
                       r"[\s\S]*ddof 1"):  # fmt: skip
        lesson9.check_prompt_mask_experiment(fn, model, tokenizer, items, P_MASKS, DRAWS)


def test_the_experiment_refuses_made_up_numbers_and_wrong_shapes(instruct):
    model, tokenizer, items = instruct

    def check(fn):
        return lesson9.check_prompt_mask_experiment(fn, model, tokenizer, items, P_MASKS, DRAWS)

    with pytest.raises(ExerciseFailed, match=r"^Exercise 9.4: p_mask 0.0, task 'count': expected"):
        check(lambda ps: {p: dict.fromkeys(TASKS, (-1.0, 0.0)) for p in ps})
    with pytest.raises(ExerciseFailed, match=r"^Exercise 9.4: p_mask 0.0: expected a dict"):
        check(lambda ps: {p: {"count": (-1.0, 0.0)} for p in ps})
    with pytest.raises(ExerciseFailed, match=r"^Exercise 9.4: p_mask 0.0, task 'count': expected "
                       r"a pair"):  # fmt: skip
        check(lambda ps: {p: dict.fromkeys(TASKS, -1.0) for p in ps})
    with pytest.raises(ExerciseFailed, match=r"^Exercise 9.4: expected a dict with the keys"):
        check(lambda ps: {0.15: {}})


def test_the_experiment_stub_is_not_attempted(capsys, instruct):
    model, tokenizer, items = instruct
    assert not lesson9.check_prompt_mask_experiment(stub, model, tokenizer, items, P_MASKS, DRAWS)
    out = capsys.readouterr().out
    assert "Exercise 9.4 not attempted yet" in out and "passed" not in out
