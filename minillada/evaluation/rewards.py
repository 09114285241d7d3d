"""Verifiable rewards for lesson 6's tasks (lesson 9's reinforcement learning).

The primary reward is lesson 6's grade: 1 when the answer, cut at the first end of turn, is the
reference exactly, else 0. A 0/1 reward gives a group of completions no signal when all are wrong;
``partial_credit`` adds an order-aware credit that stays at most ``PARTIAL_CAP`` (below the 1 of an
exact answer, so a policy can never prefer a near miss):

    credit = PARTIAL_CAP * (words equal at the same position) / max(len(answer), len(reference))

Order-aware, because a bag-of-words credit pays for copying a line unreversed on ``reverse``;
divided by the longer length, because a credit over the answer's own words pays for stopping
early, and one over the reference's pays for running on.
"""

from __future__ import annotations

PARTIAL_CAP = 0.5


def exact_match(answer: str, reference: str) -> float:
    """Lesson 6's grade: 1.0 when the answer is the reference (surrounding spaces ignored)."""
    return float(answer.strip() == reference.strip())


def partial_credit(answer: str, reference: str) -> float:
    """1.0 for an exact answer, else PARTIAL_CAP times the fraction of word positions that agree,
    over the longer of the two answers (see the module docstring)."""
    if exact_match(answer, reference):
        return 1.0
    words, ref = answer.split(), reference.split()
    longer = max(len(words), len(ref))
    if longer == 0:
        return 0.0
    same = sum(a == b for a, b in zip(words, ref, strict=False))
    return PARTIAL_CAP * same / longer
