"""One measured number with its uncertainty, and the two ways mafl gets that uncertainty.

* The standard error of a mean is ``sd / sqrt(n)`` with the *sample* standard deviation (``ddof=1``), as in
  lm-evaluation-harness; it is ``None`` when ``n < 2``.
* Anything that is not a plain mean over problems (a ratio of sums such as a per-token log-likelihood, a mean
  over a matrix) gets its standard error and interval from a seeded percentile bootstrap that resamples
  problems. Means also get a bootstrap interval (``ci_low``, ``ci_high``), so every record has one.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Callable, Sequence

import numpy as np

CI_LEVEL = 0.95


@dataclass(frozen=True)
class MetricRecord:
    """One metric of one iteration on one split.

    ``agent`` is the agent the number is about (``None``: the whole society); ``other`` is the second agent of a
    pairwise metric (the KL matrix entry ``kl/agents[agent, other]``), else ``None``.
    """

    iteration: int
    split: str
    metric: str
    value: float
    stderr: float | None
    n: int
    agent: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    other: int | None = None

    def is_of(self, metric: str, split: str = "eval", agent: int | None = None) -> bool:
        """Whether this is ``metric`` on ``split`` about ``agent`` (None: the society), not a pairwise entry."""
        return self.metric == metric and self.split == split and self.agent == agent and self.other is None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "MetricRecord":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def mean_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and its standard error ``sd / sqrt(n)`` (sample sd, ``ddof=1``); stderr is None when n < 2."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("the mean of no values")
    if x.size < 2:
        return float(x.mean()), None
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def bootstrap(
    statistic: Callable[[np.ndarray], float], n: int, *, samples: int, seed: int, level: float = CI_LEVEL
) -> tuple[float | None, float | None, float | None]:
    """Percentile bootstrap of ``statistic(indices)`` over ``n`` problems resampled with replacement.

    Returns ``(stderr, ci_low, ci_high)``: the standard deviation of the bootstrap statistics (``ddof=1``) and
    the ``level`` percentile interval. All ``None`` when ``n < 2`` or ``samples < 2``; resamples whose statistic
    is not finite (e.g. a ratio with a zero denominator) are dropped.
    """
    if n < 2 or samples < 2:
        return None, None, None
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(samples)], dtype=float)
    stats = stats[np.isfinite(stats)]
    if stats.size < 2:
        return None, None, None
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(stats.std(ddof=1)), float(low), float(high)


def mean_record(
    values: Sequence[float], *, iteration: int, split: str, metric: str, samples: int, seed: int,
    agent: int | None = None, other: int | None = None,
) -> MetricRecord:
    """A record for a mean over problems: analytic stderr, bootstrap interval."""
    x = np.asarray(values, dtype=float)
    value, se = mean_stderr(x)
    _, low, high = bootstrap(lambda idx: float(x[idx].mean()), x.size, samples=samples, seed=seed)
    return MetricRecord(iteration, split, metric, value, _finite(se), int(x.size),
                        agent, low, high, other)


def ratio_record(
    numerators: Sequence[float], denominators: Sequence[float], *, iteration: int, split: str, metric: str,
    samples: int, seed: int, agent: int | None = None, other: int | None = None,
) -> MetricRecord:
    """A record for ``sum(numerators) / sum(denominators)`` over problems (e.g. a per-token average).

    Not a mean over problems, so the stderr and interval come from the bootstrap.
    """
    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    if num.size == 0 or den.sum() <= 0:
        raise ValueError(f"{metric}: a ratio over no data")

    def stat(idx: np.ndarray) -> float:
        d = den[idx].sum()
        return float(num[idx].sum() / d) if d > 0 else math.nan

    se, low, high = bootstrap(stat, num.size, samples=samples, seed=seed)
    return MetricRecord(iteration, split, metric, float(num.sum() / den.sum()), se, int(num.size),
                        agent, low, high, other)


def statistic_record(
    statistic: Callable[[np.ndarray], float], n: int, *, iteration: int, split: str, metric: str,
    samples: int, seed: int, agent: int | None = None, other: int | None = None,
) -> MetricRecord:
    """A record for any statistic of the ``n`` problems (``statistic(all indices)``), bootstrapped."""
    value = statistic(np.arange(n))
    se, low, high = bootstrap(statistic, n, samples=samples, seed=seed)
    return MetricRecord(iteration, split, metric, float(value), se, int(n), agent, low, high, other)
