"""Checkers for lesson 1 (notebooks/01_char_masked_diffusion.ipynb)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import torch
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector

from minillada.data.char import get_batch
from minillada.diffusion.masking import apply_mask, forward_process
from minillada.diffusion.objectives import diffusion_loss, masked_diffusion_loss
from minillada.exercises import (
    Case,
    CheckResult,
    ExerciseFailed,
    assert_same,
    check,
    run_experiment,
    seeded,
)
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.sampling.primitives import NEG_INF, positions_to_reveal
from minillada.training.loop import (
    TrainConfig,
    loss_step,
    make_optimizer,
    new_train_state,
    train_loop,
)


def check_apply_mask(fn: Callable) -> CheckResult:
    """Exercise 1.1: fn(x0, t, u, mask_id) -> (x_t, masked), masked = u < (1 - 1e-3) t + 1e-3."""
    g = seeded(0)
    x0 = torch.randint(0, 65, (4, 16), generator=g)
    u = torch.rand(4, 16, generator=g)
    cases = [
        Case("4 rows at t = 0.1, 0.4, 0.7, 0.95", (x0, torch.tensor([0.1, 0.4, 0.7, 0.95]), u, 65)),
        Case(
            "t = 0 still masks with probability eps = 1e-3",
            (x0[:1], torch.zeros(1), torch.full((1, 16), 5e-4), 65),
        ),
        Case("t = 1 masks everything", (x0[:2], torch.ones(2), u[:2], 65)),
        Case(
            "u exactly at the threshold is NOT masked (strict <)",
            (x0[:1], torch.tensor([0.5]), torch.full((1, 16), 0.5 * (1 - 1e-3) + 1e-3), 7),
        ),
    ]
    return check("Exercise 1.1", fn, apply_mask, cases, "minillada.diffusion.masking.apply_mask")


def check_masked_diffusion_loss(fn: Callable) -> CheckResult:
    """Exercise 1.2: fn(logits, x0, masked, p_mask) -> scalar loss, sum(CE / p) / (B * L)."""
    g = seeded(1)
    B, L, V = 3, 10, 7
    logits = torch.randn(B, L, V, generator=g)
    x0 = torch.randint(0, V, (B, L), generator=g)
    masked = torch.rand(B, L, generator=g) < 0.5
    p = torch.tensor([0.2, 0.5, 0.9])
    cases = [
        Case("random logits, about half the positions masked", (logits, x0, masked, p)),
        Case(
            "nothing masked: the loss is exactly 0",
            (logits, x0, torch.zeros(B, L, dtype=torch.bool), p),
        ),
        Case(
            "everything masked at p = 1: plain mean cross-entropy",
            (logits, x0, torch.ones(B, L, dtype=torch.bool), torch.ones(B)),
        ),
        Case(
            "one masked token at p = 0.01 weighs 100x",
            (logits[:1], x0[:1], torch.arange(L)[None] == 3, torch.tensor([0.01])),
        ),
    ]
    return check(
        "Exercise 1.2",
        fn,
        masked_diffusion_loss,
        cases,
        "minillada.diffusion.objectives.masked_diffusion_loss",
    )


def reveal_most_confident(
    x: torch.Tensor,
    candidates: torch.Tensor,
    confidence: torch.Tensor,
    k: torch.Tensor | int,
    mask_id: int,
) -> torch.Tensor:
    """The reference of exercise 1.5: in every row, reveal the ``k`` masked positions with the
    highest confidence (the library's ``positions_to_reveal``, with revealed positions ruled out).
    x, candidates: (B, L) ids; confidence: (B, L); k: int or (B,). Returns a new x."""
    masked = x == mask_id
    scores = torch.where(masked, confidence.double(), NEG_INF)  # revealed: never candidates
    return torch.where(positions_to_reveal(scores, k), candidates, x)


def check_reveal_most_confident(fn: Callable) -> CheckResult:
    """Exercise 1.5: fn(x, candidates, confidence, k, mask_id) -> x with the k most confident masked
    positions of each row set to their candidate."""
    g = seeded(2)
    M = 9
    x = torch.randint(0, M, (3, 12), generator=g)
    x[torch.rand(3, 12, generator=g) < 0.6] = M
    candidates = torch.randint(0, M, (3, 12), generator=g)
    confidence = torch.rand(3, 12, generator=g)
    high_on_revealed = confidence.clone()
    high_on_revealed[x != M] = 2.0  # revealed positions must be ignored however confident
    cases = [
        Case("k = 1 per row", (x, candidates, confidence, 1, M)),
        Case("k = 2 per row", (x, candidates, confidence, 2, M)),
        Case(
            "k differs per row (tensor [1, 0, 3])",
            (x, candidates, confidence, torch.tensor([1, 0, 3]), M),
        ),
        Case(
            "already revealed positions have the highest confidence but must not change",
            (x, candidates, high_on_revealed, 1, M),
        ),
        Case(
            "confidences that are all negative (log-probabilities): a revealed position must never "
            "be a candidate, whatever its score",
            (x, candidates, confidence.log(), 2, M),
        ),
    ]
    return check(
        "Exercise 1.5",
        fn,
        reveal_most_confident,
        cases,
        "minillada.sampling.primitives.positions_to_reveal",
    )


# --- Exercise 1.3: where the loss comes from, noise level by noise level ------------------------

NOISE_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
_REFERENCE_DRAWS = 4  # the checker's own draws per noise level, for a tighter reference


@torch.no_grad()
def masked_cross_entropy_at(
    model, x0: torch.Tensor, mask_id: int, t: float, generator: torch.Generator
) -> tuple[float, float]:
    """The model's mean cross-entropy per masked character when every row of ``x0`` (B, L) is
    masked at noise level ``t``, over ``_REFERENCE_DRAWS`` draws of the masks; and its standard
    error, from the spread of the rows' own means (rows are independent, characters within a row
    need not be)."""
    device = next(model.parameters()).device
    row_means, counts = [], []
    for _ in range(_REFERENCE_DRAWS):
        ts = torch.full((x0.shape[0],), t)
        xt, masked, _ = forward_process(x0.cpu(), mask_id, t=ts, generator=generator)
        logits = model(xt.to(device)).double().cpu()  # (B, L, V)
        ce = F.cross_entropy(logits.transpose(1, 2), x0.cpu(), reduction="none")  # (B, L)
        n = masked.sum(dim=1)  # (B,)
        keep = n > 0
        row_means.append((ce * masked).sum(dim=1)[keep] / n[keep])
        counts.append(n[keep])
    row_means, counts = torch.cat(row_means), torch.cat(counts).double()
    mean = float((row_means * counts).sum() / counts.sum())  # per masked character
    # weighted rows: the standard error of a ratio of sums, by the delta method
    resid = (row_means - mean) * counts
    se = float(resid.pow(2).sum().sqrt() / counts.sum())
    return mean, se


def check_noise_level_experiment(
    fn: Callable, model, x0: torch.Tensor, mask_id: int
) -> CheckResult:
    """Exercise 1.3: fn(noise_levels) -> {t: the model's mean cross-entropy (nats) per masked
    character when every row of the batch is masked at level t}; then the outcome.

    The learner draws their own masks (one draw of the batch is enough), so the comparison is
    statistical: the checker measures each level on four draws of its own and accepts the
    learner's number within 5 standard errors of the difference. One draw has about twice the
    checker's standard error, so the difference has about sqrt(1 + 4) = 2.2 of them; 5 x 2.2 =
    11 of the checker's standard errors (about 0.1 nats at t = 0.1 on lesson 1's batch, less at
    higher t). A mean over all B * L positions is off by a factor t, bits instead of nats by
    1.44, and cross-entropies of the visible characters pull the low levels toward zero."""
    got = run_experiment("Exercise 1.3", fn, list(NOISE_LEVELS))
    if got is None:
        return CheckResult(False)
    generator = torch.Generator().manual_seed(1234)
    for t in NOISE_LEVELS:
        ref, se = masked_cross_entropy_at(model, x0, mask_id, t, generator)
        try:
            value = float(got[t])
        except (TypeError, ValueError):
            raise ExerciseFailed(
                f"Exercise 1.3: t = {t}: expected one number (nats per masked character), got "
                f"{got[t]!r}"
            ) from None
        tolerance = 5 * math.sqrt(1 + 4) * se
        if not abs(value - ref) <= tolerance:
            raise ExerciseFailed(
                f"Exercise 1.3: t = {t}: expected about {ref:.3f} nats per masked character "
                f"(within {tolerance:.3f}), got {value:.4g}. Mask every row at this t "
                "(forward_process with t=...), run the model, and average the cross-entropy over "
                "the masked positions only, dividing by how many there are."
            )
    values = [float(got[t]) for t in NOISE_LEVELS]
    plain = sum(values) / len(values)
    weighted = sum(t * v for t, v in zip(NOISE_LEVELS, values, strict=True)) / sum(NOISE_LEVELS)
    trend = (
        "rises with t: the fewer characters the model sees, the harder each guess"
        if values == sorted(values)
        else "does not rise steadily with t"
    )
    print(
        "Exercise 1.3 passed: the cross-entropy per masked character "
        + ", ".join(f"{v:.2f} (t={t})" for t, v in zip(NOISE_LEVELS, values, strict=True))
        + f" {trend}. Weighting every t equally, as the 1/t-weighted loss does, gives {plain:.3f} "
        f"nats/char; weighting each t by how many characters it masks, as a masked-mean "
        f"cross-entropy does, gives {weighted:.3f}."
    )
    return CheckResult(True)


# --- Exercise 1.4: one training step --------------------------------------------------------------

_STEP_CONFIG = TinyTransformerConfig(vocab_size=12, block_size=16, n_layer=2, n_head=2, n_embd=16)
_STEP_MASK_ID = 11  # ids 0-10 are "characters"
_STEP_TRAIN = TrainConfig(
    max_iters=4, batch_size=4, lr=3e-2, min_lr=3e-3, warmup_iters=2, grad_clip=1.0, seed=0
)


def _step_model(seed: int) -> TinyTransformer:
    # float64, so that the learner's arithmetic and the library's agree to ~1e-15 however the
    # learner orders the sums; 3e-2 is a large learning rate on purpose: the gradient norm
    # exceeds the clipping threshold of 1 in these steps, so a step without clipping differs.
    return TinyTransformer(_STEP_CONFIG, generator=torch.Generator().manual_seed(seed)).double()


def _step_data(seed: int) -> torch.Tensor:
    return torch.randint(0, _STEP_MASK_ID, (400,), generator=torch.Generator().manual_seed(seed))


def _library_steps(seed: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` iterations of minillada.training.loop.train_loop with lesson 1's step: the
    losses (steps,) and every weight afterwards, flattened."""
    model = _step_model(seed)
    cfg = replace(_STEP_TRAIN, max_iters=steps)
    state = new_train_state(model, cfg)
    state.generator.manual_seed(seed)
    data = _step_data(seed)

    def loss_fn(m, batch, generator):
        return diffusion_loss(m, batch, _STEP_MASK_ID, stratified=True, generator=generator)

    batches = partial(get_batch, data, cfg.batch_size, _STEP_CONFIG.block_size)
    state = train_loop(model, loss_step(batches, loss_fn), cfg, state, progress=False)
    losses = torch.tensor(state.history["loss"], dtype=torch.float64)
    return losses, parameters_to_vector(model.parameters()).detach()


def _learner_steps(fn: Callable, seed: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same iterations with the learner's training_step in place of the library's loop body,
    fed the same batches, learning rates and generator."""
    model = _step_model(seed)
    cfg = replace(_STEP_TRAIN, max_iters=steps)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(seed)
    data = _step_data(seed)
    model.train()
    losses = []
    for it in range(steps):
        batch = get_batch(data, cfg.batch_size, _STEP_CONFIG.block_size, generator)
        loss = fn(model, optimizer, batch, _STEP_MASK_ID, cfg.learning_rate(it), generator)
        losses.append(float(loss))
    return (
        torch.tensor(losses, dtype=torch.float64),
        parameters_to_vector(model.parameters()).detach(),
    )


def _same_training(expected: tuple, got: tuple) -> None:
    """Losses step by step, then the weights; each mismatch says which part of a step to look at."""
    exp_losses, exp_weights = expected
    got_losses, got_weights = got
    tol = dict(atol=1e-10, rtol=1e-8)  # float64 on both sides: ~1e-15 apart when equal
    for i, (e, g) in enumerate(zip(exp_losses.tolist(), got_losses.tolist(), strict=True)):
        if abs(e - g) > tol["atol"] + tol["rtol"] * abs(e):
            hint = (
                "The very first loss differs: draw the noise once per step with "
                "forward_process(batch, mask_id, stratified=True, generator=generator), run the "
                "model on x_t and take the 1/t-weighted loss of section 5 (the order of calls on "
                "the generator matters, and the step must draw nothing else from it)."
                if i == 0
                else "The first step agrees but a later one does not, so something carries over "
                "between steps: zero the gradients before backward (optimizer.zero_grad()), and "
                "set the learning rate of every parameter group (optimizer.param_groups) to lr."
            )
            raise ExerciseFailed(f"loss of step {i + 1}: expected {e!r}, got {g!r}. {hint}")
    try:
        assert_same(exp_weights, got_weights, **tol, path="weights after the steps")
    except ExerciseFailed as err:
        raise ExerciseFailed(
            f"{err}\nThe losses agree but the weights do not: after backward, clip the global "
            "gradient norm at 1 (torch.nn.utils.clip_grad_norm_), then optimizer.step(), "
            "with the learning rate set to lr."
        ) from None


def check_training_step(fn: Callable) -> CheckResult:
    """Exercise 1.4: fn(model, optimizer, batch, mask_id, lr, generator) -> the loss (a float),
    having done one full iteration: learning rate, zeroed gradients, noise, loss, backward,
    clipping at 1, update. Graduates against minillada.training.loop.train_loop."""
    cases = [
        Case("one step from a fresh model", (0, 1)),
        Case("four steps: warmup, then cosine decay of the learning rate", (0, 4)),
        Case("three steps from another seed (other weights, batches and noise)", (7, 3)),
    ]
    return check(
        "Exercise 1.4",
        lambda seed, steps: _learner_steps(fn, seed, steps),
        _library_steps,
        cases,
        "minillada.training.loop.train_loop with lesson 1's step",
        compare=_same_training,
    )
