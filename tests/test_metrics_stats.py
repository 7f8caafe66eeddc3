"""Standard errors and the bootstrap on numbers worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mafl.metrics.stats import MetricRecord, bootstrap, mean_record, mean_stderr, ratio_record, statistic_record


def test_mean_stderr_uses_sample_sd():
    values = [1, 0, 1, 1]
    mean, se = mean_stderr(values)
    assert mean == pytest.approx(0.75)
    # by hand: deviations 0.25, -0.75, 0.25, 0.25 -> sum of squares 0.75; ddof=1 -> var 0.25, sd 0.5; /sqrt(4)
    assert se == pytest.approx(0.5 / 2)
    assert se == pytest.approx(math.sqrt(sum((v - 0.75) ** 2 for v in values) / 3) / math.sqrt(4))


def test_mean_stderr_single_value_and_empty():
    assert mean_stderr([0.3]) == (pytest.approx(0.3), None)
    with pytest.raises(ValueError):
        mean_stderr([])


def test_bootstrap_is_seeded_and_brackets_the_statistic():
    x = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=float)
    stat = lambda idx: float(x[idx].mean())  # noqa: E731
    a = bootstrap(stat, x.size, samples=500, seed=3)
    b = bootstrap(stat, x.size, samples=500, seed=3)
    c = bootstrap(stat, x.size, samples=500, seed=4)
    assert a == b
    assert a != c
    se, low, high = a
    assert low <= x.mean() <= high
    # the bootstrap sd of a mean approaches the plug-in sd/sqrt(n) (ddof=0)
    assert se == pytest.approx(x.std(ddof=0) / math.sqrt(x.size), rel=0.2)


def test_bootstrap_of_constant_data_has_zero_width():
    se, low, high = bootstrap(lambda idx: 2.0, 5, samples=50, seed=0)
    assert (se, low, high) == (0.0, 2.0, 2.0)
    assert bootstrap(lambda idx: 1.0, 1, samples=50, seed=0) == (None, None, None)


def test_ratio_record_is_a_ratio_of_sums():
    num, den = [2.0, 9.0, 1.0], [1.0, 3.0, 4.0]
    r = ratio_record(num, den, iteration=1, split="eval", metric="nll", samples=200, seed=0, agent=2)
    assert r.value == pytest.approx(12.0 / 8.0)  # not the mean of the ratios (2 + 3 + 0.25) / 3
    assert r.n == 3 and r.agent == 2 and r.stderr > 0
    assert r.ci_low <= r.value <= r.ci_high


def test_mean_and_statistic_records_round_trip_json():
    m = mean_record([1, 0, 1, 1], iteration=2, split="train", metric="accuracy/debate", samples=100, seed=1)
    s = statistic_record(lambda idx: float(len(idx)), 4, iteration=2, split="train", metric="x", samples=10, seed=0)
    assert m.value == pytest.approx(0.75) and m.stderr == pytest.approx(0.25) and m.n == 4
    assert s.value == 4.0 and s.stderr == 0.0
    for rec in (m, s):
        assert MetricRecord.from_json(rec.to_json()) == rec
