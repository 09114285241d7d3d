"""Lesson 1's checkers: the solutions pass, stubs are 'not attempted', common mistakes fail."""

import pytest
import torch
import torch.nn.functional as F
from checker_cases import assert_fails, ids, solution_and_stub_tests

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
    raise NotImplementedError(
        "Exercise 1.1: mask x0 where u < (1 - eps) * t + eps; return (x_t, masked)"
    )


def masked_diffusion_loss_stub(logits, x0, masked, p_mask):
    raise NotImplementedError("Exercise 1.2: sum of CE / p over masked positions, divided by B * L")


def reveal_most_confident_stub(x, candidates, confidence, k, mask_id):
    raise NotImplementedError(
        "Exercise 1.3: in each row, reveal the k most confident masked positions"
    )


EXERCISES = [
    ("1.1", lesson1.check_apply_mask, apply_mask, apply_mask_stub),
    ("1.2", lesson1.check_masked_diffusion_loss, masked_diffusion_loss, masked_diffusion_loss_stub),
    ("1.3", lesson1.check_reveal_most_confident, reveal_most_confident, reveal_most_confident_stub),
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


# --- Exercise 1.3: reveal_most_confident ---------------------------------------------------------


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
    assert_fails(lesson1.check_reveal_most_confident, mistake, "1.3", match)


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

    assert_fails(lesson1.check_reveal_most_confident, zeroes_revealed, "1.3", r"case \d+/\d+ \(")
