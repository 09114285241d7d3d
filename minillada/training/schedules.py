"""Learning-rate schedules, as pure functions of the iteration number.

* ``lr_at``: linear warmup, then cosine decay to a floor (lesson 1; nanoGPT's schedule).
* ``wsd_lr``: warmup-stable-decay, LLaDA's pre-training schedule (lesson 4; LLaDA paper §2.3):
  a linear warmup to the peak, a long constant stretch, and a linear decay to a floor at the end.
  Unlike a cosine, the stable phase does not need to know the run's length in advance; only
  the decay does.
"""

from __future__ import annotations

import math


def lr_at(it: int, max_iters: int, lr: float, min_lr: float, warmup_iters: int) -> float:
    """Linear warmup from lr/warmup_iters to lr, then cosine decay to min_lr at max_iters."""
    if it < warmup_iters:
        return lr * (it + 1) / warmup_iters
    if it >= max_iters:
        return min_lr
    progress = (it - warmup_iters) / max(1, max_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def wsd_lr(
    it: int, max_iters: int, lr: float, min_lr: float, warmup_iters: int, decay_iters: int
) -> float:
    """Warmup-stable-decay: linear warmup to ``lr``, constant, then linear decay to ``min_lr``.

    Iteration ``it`` (0-based) of ``max_iters``: warmup gives lr * (it + 1) / warmup_iters; the
    decay occupies the last ``decay_iters`` iterations and reaches ``min_lr`` at the last one.
    LLaDA-8B: warmup 2000 iterations to 4e-4, stable, (a step down to 1e-4 after 1.2T tokens), and
    a final linear decay 1e-4 -> 1e-5 over the last 0.3T tokens.
    """
    if it < warmup_iters:
        return lr * (it + 1) / warmup_iters
    decay_start = max_iters - decay_iters
    if decay_iters <= 0 or it < decay_start:
        return lr
    if it >= max_iters - 1:
        return min_lr
    progress = (it - decay_start + 1) / decay_iters  # in (0, 1]
    return lr + progress * (min_lr - lr)
