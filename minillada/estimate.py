"""A number measured with a standard error: the one result type of every estimator in minillada.

A validation bound (lesson 1), an exact autoregressive NLL (lesson 3), a conditional likelihood
bound (lesson 3) and a generative perplexity (lesson 3) are all a mean of ``n`` values, in nats,
with the spread of those values. One type and one rule for the standard error keep them comparable:

* ``n >= 2`` values: the sample standard deviation (ddof = 1) over sqrt(n);
* a deterministic quantity (``exact=True``: e.g. the l-estimator of a one-token answer, which has
  no Monte Carlo noise): 0;
* a single random value: NaN, since one draw says nothing about its own spread.

What the ``n`` values are (windows of a text, Monte Carlo samples of one answer) is stated in
``detail``; the standard error counts every source of spread among them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def standard_error(values: torch.Tensor | Sequence[float], exact: bool = False) -> float:
    """The standard error of the mean of ``values`` under the rule in the module docstring."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if exact:
        return 0.0
    if len(v) < 2:
        return float("nan")
    return v.std().item() / math.sqrt(len(v))


@dataclass(frozen=True)
class Estimate:
    """The mean of ``n`` values in nats, with its standard error.

    ``relation`` says what the number is: "<=" an upper bound on a negative log-likelihood (an
    ELBO estimate), "=" the quantity itself. ``per_token``: nats per token (True) or a total over
    an answer (False).
    """

    nats: float  # the mean of the values
    stderr: float  # standard error of ``nats`` (see standard_error)
    n: int  # how many values the mean is over
    relation: str = "<="  # "<=": an upper bound on the NLL; "=": the NLL itself
    per_token: bool = True  # nats per token, or summed over an answer
    detail: str = ""  # what the values are, e.g. "871 sequences x 16 samples"
    quantity: str = ""  # what is estimated, e.g. "-log p(answer | prompt)"; "" for a per-token NLL
    exact: bool = False  # no Monte Carlo noise at all

    @classmethod
    def of(cls, values: torch.Tensor | Sequence[float], exact: bool = False, **fields) -> Estimate:
        """The Estimate of a set of values: their mean and standard_error."""
        v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        return cls(v.mean().item(), standard_error(v, exact), len(v), exact=exact, **fields)

    @property
    def bits(self) -> float:
        """The estimate in bits (same unit as ``nats``: per token, or a total)."""
        return self.nats / math.log(2)

    @property
    def log_likelihood(self) -> float:
        """Minus the estimate: what LLaDA's get_log_likelihood.py returns (a lower bound on log p
        when ``relation`` is "<=")."""
        return -self.nats

    def __str__(self) -> str:
        prefix = f"{self.quantity} " if self.quantity else ""
        unit = "nats/token" if self.per_token else "nats"
        text = f"{prefix}{self.relation} {self.nats:.3f} ± {self.stderr:.3f} {unit}"
        if self.per_token:
            text += f" = {self.bits:.3f} bits/token"
        return text + (f" ({self.detail})" if self.detail else "")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion ``successes / n`` (z = 1.96): unlike
    p ± 1.96 * stderr it stays inside [0, 1] and is not empty at 0 or n successes."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"Expected 0 <= successes <= n and n >= 1, got {successes} of {n}.")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the edges
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


@dataclass(frozen=True)
class PairedComparison:
    """Two settings graded right/wrong on the same items, compared by McNemar's exact test.

    Only the *discordant* items carry information: ``only_a`` right under A alone, ``only_b``
    right under B alone. If A and B are equally accurate, each discordant item is a fair coin, so
    ``only_b`` ~ Binomial(only_a + only_b, 1/2). Intervals of the two accuracies that overlap say
    nothing here: the items are shared, and the pairing removes their difficulty from the noise.
    """

    n: int  # items graded under both settings
    right_a: int
    right_b: int
    only_a: int  # right under A, wrong under B
    only_b: int  # right under B, wrong under A

    @property
    def difference(self) -> float:
        """accuracy(B) - accuracy(A)."""
        return (self.right_b - self.right_a) / self.n

    @property
    def p_two_sided(self) -> float:
        """P(a split of the discordant items at least this uneven, either way | equal accuracy)."""
        k, d = min(self.only_a, self.only_b), self.only_a + self.only_b
        return min(1.0, 2 * _binomial_tail(k, d)) if d else 1.0

    @property
    def p_b_worse(self) -> float:
        """One-sided: P(B right alone on at most only_b of the discordant items | equal accuracy);
        below 0.05, B is worse than A at the 5% level."""
        d = self.only_a + self.only_b
        return _binomial_tail(self.only_b, d) if d else 1.0

    def line(self, a: str = "A", b: str = "B") -> str:
        return (
            f"{b} vs {a} on the same {self.n} items: {self.right_b} vs {self.right_a} right, "
            f"{self.only_b} right only under {b}, {self.only_a} only under {a}; McNemar exact "
            f"p = {self.p_two_sided:.3g} (two-sided), p = {self.p_b_worse:.3g} that {b} is worse"
        )


def _binomial_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (integer sums)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def paired_comparison(right_a: Sequence[bool], right_b: Sequence[bool]) -> PairedComparison:
    """McNemar's exact test of two settings graded on the same items, in the same order."""
    if len(right_a) != len(right_b) or not right_a:
        raise ValueError(
            f"A paired test needs the same items under both settings: got {len(right_a)} and "
            f"{len(right_b)} grades (and at least one)."
        )
    a, b = [bool(x) for x in right_a], [bool(x) for x in right_b]
    return PairedComparison(
        len(a),
        sum(a),
        sum(b),
        sum(x and not y for x, y in zip(a, b, strict=True)),
        sum(y and not x for x, y in zip(a, b, strict=True)),
    )


@dataclass(frozen=True)
class PairedBootstrap:
    """Two settings, each trained on several seeds, graded on the same ``n`` items: the difference
    in mean accuracy (A minus B, each averaged over its runs) with a bootstrap over the items.

    Resampling items keeps every run's grades of an item together, so the pairing (the same item
    under both settings) is kept; the spread between seeds enters only through the per-item share
    of runs that got it right, not as a source of its own: with 3 runs per setting the test says
    whether these runs differ on these items, not what a fourth seed would do."""

    n: int  # items
    runs_a: int
    runs_b: int
    mean_a: float  # accuracy averaged over A's runs
    mean_b: float
    difference: float  # mean_a - mean_b
    interval95: tuple[float, float]  # percentile interval of the resampled differences
    p_a_not_better: float  # one-sided: share of resamples (plus one) with difference <= 0
    draws: int


def paired_bootstrap(
    runs_a: Sequence[Sequence[bool]],
    runs_b: Sequence[Sequence[bool]],
    draws: int = 10_000,
    seed: int = 0,
) -> PairedBootstrap:
    """Paired bootstrap of seed-averaged accuracy: ``runs_a[r][i]`` is run r's grade of item i.

    Counts stay integers (A's right runs per item times B's run count, minus the converse) until
    the last division, so the p-value and interval do not depend on the CPU's float kernels."""
    if not runs_a or not runs_b:
        raise ValueError("A paired bootstrap needs at least one run per setting.")
    lengths = {len(r) for r in (*runs_a, *runs_b)}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(
            f"Every run must grade the same items in the same order: got runs of "
            f"{sorted(lengths)} grades (and at least one item)."
        )
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}.")
    ka, kb = len(runs_a), len(runs_b)
    right_a = torch.tensor([[bool(x) for x in r] for r in runs_a], dtype=torch.int64).sum(0)
    right_b = torch.tensor([[bool(x) for x in r] for r in runs_b], dtype=torch.int64).sum(0)
    per_item = right_a * kb - right_b * ka  # (n,) integer; / (ka * kb) is the accuracy gap
    n = per_item.numel()
    g = torch.Generator().manual_seed(seed)
    totals = torch.cat([per_item[torch.randint(n, (min(1000, draws - i), n), generator=g)].sum(1)
                        for i in range(0, draws, 1000)])  # (draws,) integer sums  # fmt: skip
    scale = n * ka * kb
    ordered = totals.sort().values
    lo = ordered[max(0, math.ceil(0.025 * draws) - 1)].item() / scale
    hi = ordered[min(draws - 1, math.ceil(0.975 * draws) - 1)].item() / scale
    return PairedBootstrap(
        n, ka, kb, right_a.sum().item() / (n * ka), right_b.sum().item() / (n * kb),
        per_item.sum().item() / scale, (lo, hi),
        (int((totals <= 0).sum()) + 1) / (draws + 1), draws,
    )  # fmt: skip
