"""Lesson 1's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import math

import pytest
import torch
import torch.nn.functional as F
from checker_cases import assert_fails, ids, solution_and_stub_tests

from minillada.checkpoints.shipped import load_char_shakespeare
from minillada.diffusion.masking import forward_process
from minillada.exercises import lesson1

# --- the solutions, as in notebooks/solutions/01_char_masked_diffusion.ipynb --------------------


def apply_mask(x0, t, u, mask_id, eps=1e-3):
    p = (1 - eps) * t + eps
    masked = u < p[:, None]
    return torch.where(masked, mask_id, x0), masked


def masked_diffusion_loss(logits, x0, masked, p_mask):
    B, L = x0.shape
    ce = F.cross_entropy(logits.reshape(B * L, -1), x0.reshape(-1), reduction="none").view(B, L)
    return (ce * masked / p_mask[:, None]).sum() / (B * L)


@torch.no_grad()
def cross_entropy_by_noise_level(levels, model, batch, mask_id):
    # in the notebook the model, the batch and the mask id are the lesson's `trained`, `batch`
    # and `tok.mask_id`; here they are arguments, bound by the EXERCISES table below
    g = torch.Generator().manual_seed(0)
    result = {}
    for t in levels:
        xt, masked, _ = forward_process(batch, mask_id, t=torch.full((len(batch),), t), generator=g)
        ce = F.cross_entropy(model(xt).transpose(1, 2), batch, reduction="none")  # (B, L)
        result[t] = ce[masked].mean().item()
    return result


def training_step(model, optimizer, batch, mask_id, lr, generator):
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad()
    xt, masked, p = forward_process(batch, mask_id, stratified=True, generator=generator)
    loss = masked_diffusion_loss(model(xt), batch, masked, p)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def reveal_most_confident(x, candidates, confidence, k, mask_id):
    x = x.clone()
    k = torch.as_tensor(k).expand(x.shape[0])
    confidence = confidence.masked_fill(x != mask_id, float("-inf"))
    for b in range(x.shape[0]):
        top = confidence[b].topk(int(k[b])).indices
        x[b, top] = candidates[b, top]
    return x


# --- the stubs, as in notebooks/01_char_masked_diffusion.ipynb ----------------------------------


def apply_mask_stub(x0, t, u, mask_id, eps=1e-3):
    raise NotImplementedError("Exercise 1.1: write the forward process")


def masked_diffusion_loss_stub(logits, x0, masked, p_mask):
    raise NotImplementedError("Exercise 1.2: write the masked diffusion loss")


def cross_entropy_by_noise_level_stub(levels, *lesson_objects):
    raise NotImplementedError("Exercise 1.3: measure the loss at each noise level")


def training_step_stub(model, optimizer, batch, mask_id, lr, generator):
    raise NotImplementedError("Exercise 1.4: write one training step")


def reveal_most_confident_stub(x, candidates, confidence, k, mask_id):
    raise NotImplementedError("Exercise 1.5: reveal the most confident masked positions")


def _shipped_model_and_batch():
    model, _ = load_char_shakespeare("cpu")
    batch = torch.randint(0, 65, (32, 128), generator=torch.Generator().manual_seed(8))
    return model, batch


_MODEL, _BATCH = _shipped_model_and_batch()


def check_noise_levels(fn):
    return lesson1.check_noise_level_experiment(fn, _MODEL, _BATCH, 65)


def with_lesson_objects(fn):
    return lambda levels: fn(levels, _MODEL, _BATCH, 65)


EXERCISES = [
    ("1.1", lesson1.check_apply_mask, apply_mask, apply_mask_stub),
    ("1.2", lesson1.check_masked_diffusion_loss, masked_diffusion_loss, masked_diffusion_loss_stub),
    (
        "1.3",
        check_noise_levels,
        with_lesson_objects(cross_entropy_by_noise_level),
        with_lesson_objects(cross_entropy_by_noise_level_stub),
    ),
    ("1.4", lesson1.check_training_step, training_step, training_step_stub),
    ("1.5", lesson1.check_reveal_most_confident, reveal_most_confident, reveal_most_confident_stub),
]
test_solution_passes, test_stub_is_not_attempted = solution_and_stub_tests(EXERCISES)


# --- Exercise 1.1: apply_mask --------------------------------------------------------------------


def mask_prob(t, eps):
    return ((1 - eps) * t + eps)[:, None]


def forgets_eps(x0, t, u, mask_id, eps=1e-3):  # p = t: nothing is ever masked at t = 0
    masked = u < t[:, None]
    return torch.where(masked, mask_id, x0), masked


def non_strict(x0, t, u, mask_id, eps=1e-3):  # <= instead of <
    masked = u <= mask_prob(t, eps)
    return torch.where(masked, mask_id, x0), masked


def t_plus_eps(x0, t, u, mask_id, eps=1e-3):  # p = t + eps, which exceeds 1 at t = 1
    masked = u < (t + eps)[:, None]
    return torch.where(masked, mask_id, x0), masked


def inverted(x0, t, u, mask_id, eps=1e-3):  # masks where u > p: keeps the tokens it should mask
    masked = u > mask_prob(t, eps)
    return torch.where(masked, mask_id, x0), masked


def returns_only_x_t(x0, t, u, mask_id, eps=1e-3):  # forgets to return the mask as well
    masked = u < mask_prob(t, eps)
    return torch.where(masked, mask_id, x0)


def no_broadcast(x0, t, u, mask_id, eps=1e-3):  # p of shape (B,) against u of shape (B, L)
    masked = u < (1 - eps) * t + eps
    return torch.where(masked, mask_id, x0), masked


APPLY_MASK_MISTAKES = [
    (forgets_eps, r"case 2/4 \(t = 0 still masks with probability eps = 1e-3\).*\n.*values differ"),
    (non_strict, r"case 4/4 \(u exactly at the threshold is NOT masked \(strict <\)\)"),
    (t_plus_eps, r"case 4/4 \(u exactly at the threshold is NOT masked"),
    (inverted, r"case 1/4 \(4 rows at t = 0\.1, 0\.4, 0\.7, 0\.95\)"),
    (returns_only_x_t, r"case 1/4 .*\n.*expected a tuple of 2 items"),
    (no_broadcast, r"your function raised RuntimeError.*\n.*on case 1/4: 4 rows at t"),
]


@pytest.mark.parametrize("mistake, match", APPLY_MASK_MISTAKES, ids=ids(APPLY_MASK_MISTAKES))
def test_apply_mask_mistake_fails(mistake, match):
    assert_fails(lesson1.check_apply_mask, mistake, "1.1", match)


# --- Exercise 1.2: masked_diffusion_loss ---------------------------------------------------------


def cross_entropy(logits, x0):
    B, L = x0.shape
    return F.cross_entropy(logits.reshape(B * L, -1), x0.reshape(-1), reduction="none").view(B, L)


def divides_by_masked_count(logits, x0, masked, p_mask):  # / number of masked tokens, not B * L
    return (cross_entropy(logits, x0) * masked / p_mask[:, None]).sum() / masked.sum()


def forgets_one_over_t(logits, x0, masked, p_mask):  # no 1/t weight: not an ELBO
    B, L = x0.shape
    return (cross_entropy(logits, x0) * masked).sum() / (B * L)


def multiplies_by_t(logits, x0, masked, p_mask):  # * p instead of / p
    B, L = x0.shape
    return (cross_entropy(logits, x0) * masked * p_mask[:, None]).sum() / (B * L)


def every_position(logits, x0, masked, p_mask):  # forgets to keep only the masked positions
    B, L = x0.shape
    return (cross_entropy(logits, x0) / p_mask[:, None]).sum() / (B * L)


def divides_by_batch(logits, x0, masked, p_mask):  # / B: a per-sequence sum, not per token
    return (cross_entropy(logits, x0) * masked / p_mask[:, None]).sum() / x0.shape[0]


LOSS_MISTAKES = [
    divides_by_masked_count,
    forgets_one_over_t,
    multiplies_by_t,
    every_position,
    divides_by_batch,
]


@pytest.mark.parametrize("mistake", LOSS_MISTAKES, ids=ids(LOSS_MISTAKES))
def test_masked_diffusion_loss_mistake_fails(mistake):
    assert_fails(
        lesson1.check_masked_diffusion_loss,
        mistake,
        "1.2",
        r"case 1/4 \(random logits, about half the positions masked\).*\n.*values differ",
    )


# --- Exercise 1.3: the loss at each noise level --------------------------------------------------


def in_bits(levels, *objects):  # bits instead of nats
    return {t: v / math.log(2) for t, v in cross_entropy_by_noise_level(levels, *objects).items()}


@torch.no_grad()
def over_every_position(levels, model, batch, mask_id):  # visible characters included
    g = torch.Generator().manual_seed(0)
    result = {}
    for t in levels:
        xt, _, _ = forward_process(batch, mask_id, t=torch.full((len(batch),), t), generator=g)
        ce = F.cross_entropy(model(xt).transpose(1, 2), batch, reduction="none")
        result[t] = ce.mean().item()
    return result


@torch.no_grad()
def divided_by_every_position(levels, model, batch, mask_id):  # the sum / (B * L): t times smaller
    g = torch.Generator().manual_seed(0)
    result = {}
    for t in levels:
        xt, masked, _ = forward_process(batch, mask_id, t=torch.full((len(batch),), t), generator=g)
        ce = F.cross_entropy(model(xt).transpose(1, 2), batch, reduction="none")
        result[t] = ((ce * masked).sum() / ce.numel()).item()
    return result


@pytest.mark.parametrize(
    "mistake", [in_bits, over_every_position, divided_by_every_position], ids=lambda f: f.__name__
)
def test_noise_level_mistake_fails(mistake):
    message = assert_fails(check_noise_levels, with_lesson_objects(mistake), "1.3", r"t = 0\.\d: ")
    assert "masked positions only" in message


def test_noise_level_outcome_compares_the_two_averages(capsys):
    assert check_noise_levels(with_lesson_objects(cross_entropy_by_noise_level))
    out = capsys.readouterr().out
    assert "Weighting every t equally" in out and "masked-mean cross-entropy" in out


def test_noise_level_keys_must_match():
    assert_fails(check_noise_levels, lambda levels: {0.5: 1.0}, "1.3", r"expected a dict")


# --- Exercise 1.4: training_step -----------------------------------------------------------------


def step_with(zero_grad=True, set_lr=True, weighted=True, clip="before"):
    """training_step with one of its six parts left out or misplaced, as a mistake would."""

    def step(model, optimizer, batch, mask_id, lr, generator):
        if set_lr:
            for group in optimizer.param_groups:
                group["lr"] = lr
        if zero_grad:
            optimizer.zero_grad()
        xt, masked, p = forward_process(batch, mask_id, stratified=True, generator=generator)
        weight = p if weighted else torch.ones_like(p)  # no 1/t when unweighted
        loss = masked_diffusion_loss(model(xt), batch, masked, weight)
        loss.backward()
        if clip == "before":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if clip == "after":  # too late: the update has used the unclipped gradient
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        return loss.item()

    return step


forgets_zero_grad = step_with(zero_grad=False)
forgets_clipping = step_with(clip=None)
clips_after_the_step = step_with(clip="after")
ignores_lr = step_with(set_lr=False)  # keeps the optimizer's own learning rate
unweighted_loss = step_with(weighted=False)
for name in (
    "forgets_zero_grad",
    "forgets_clipping",
    "clips_after_the_step",
    "ignores_lr",
    "unweighted_loss",
):
    globals()[name].__name__ = name


STEP_MISTAKES = [
    (forgets_zero_grad, r"case 2/3 .*\n.*loss of step [23]: .*zero the gradients"),
    (forgets_clipping, r"case 1/3 .*\n.*weights after the steps(.*\n)*.*clip the global"),
    (clips_after_the_step, r"case 1/3 .*\n.*weights after the steps(.*\n)*.*clip the global"),
    (ignores_lr, r"case 1/3 .*\n.*weights after the steps"),
    (unweighted_loss, r"case 1/3 .*\n.*loss of step 1: .*1/t-weighted loss"),
]


@pytest.mark.parametrize("mistake, match", STEP_MISTAKES, ids=ids(STEP_MISTAKES))
def test_training_step_mistake_fails(mistake, match):
    assert_fails(lesson1.check_training_step, mistake, "1.4", match)


# --- Exercise 1.5: reveal_most_confident ---------------------------------------------------------


def reveal(x, candidates, confidence, k, largest=True):
    x = x.clone()
    k = torch.as_tensor(k).expand(x.shape[0])
    for b in range(x.shape[0]):
        top = confidence[b].topk(int(k[b]), largest=largest).indices
        x[b, top] = candidates[b, top]
    return x


def includes_revealed(x, candidates, confidence, k, mask_id):  # forgets to exclude revealed ones
    return reveal(x, candidates, confidence, k)


def least_confident(x, candidates, confidence, k, mask_id):  # topk(largest=False)
    confidence = confidence.masked_fill(x != mask_id, float("inf"))
    return reveal(x, candidates, confidence, k, largest=False)


def same_k_for_every_row(x, candidates, confidence, k, mask_id):  # uses k[0] for every row
    confidence = confidence.masked_fill(x != mask_id, float("-inf"))
    return reveal(x, candidates, confidence, int(torch.as_tensor(k).reshape(-1)[0]))


def top_k_of_the_whole_batch(x, candidates, confidence, k, mask_id):  # B * k over all rows at once
    confidence = confidence.masked_fill(x != mask_id, float("-inf")).flatten()
    total = int(torch.as_tensor(k).expand(x.shape[0]).sum())
    top = confidence.topk(total).indices
    out = x.clone().flatten()
    out[top] = candidates.flatten()[top]
    return out.view_as(x)


def reveals_every_mask(x, candidates, confidence, k, mask_id):  # ignores k
    return torch.where(x == mask_id, candidates, x)


REVEAL_MISTAKES = [
    (includes_revealed, r"case \d/5 \(.*\).*\n.*values differ"),
    (least_confident, r"case 1/5 \(k = 1 per row\).*\n.*values differ"),
    (same_k_for_every_row, r"case 3/5 \(k differs per row \(tensor \[1, 0, 3\]\)\)"),
    (top_k_of_the_whole_batch, r"case 1/5 \(k = 1 per row\).*\n.*values differ"),
    (reveals_every_mask, r"case 1/5 \(k = 1 per row\).*\n.*values differ"),
]


@pytest.mark.parametrize("mistake, match", REVEAL_MISTAKES, ids=ids(REVEAL_MISTAKES))
def test_reveal_most_confident_mistake_fails(mistake, match):
    assert_fails(lesson1.check_reveal_most_confident, mistake, "1.5", match)


def test_zeroed_instead_of_minus_inf_fails():
    def zeroes_revealed(x, candidates, confidence, k, mask_id):
        return reveal(x, candidates, confidence * (x == mask_id), k)

    # The mistake is real: with log-probability confidences it overwrites a revealed position.
    M = 9
    x = torch.tensor([[1, M, M]])
    confidence = torch.tensor([[-0.1, -0.5, -0.2]])
    candidates = torch.tensor([[4, 5, 6]])
    assert zeroes_revealed(x, candidates, confidence, 1, M).tolist() == [[4, M, M]]
    assert reveal_most_confident(x, candidates, confidence, 1, M).tolist() == [[1, M, 6]]

    assert_fails(lesson1.check_reveal_most_confident, zeroes_revealed, "1.5", r"case \d+/\d+ \(")
