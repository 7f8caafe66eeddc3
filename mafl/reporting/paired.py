"""Paired comparisons: the difference between two methods (or two iterations of one) on the same problems, pooled
over seeds, with a 95% paired-bootstrap interval (``mafl report --compare A B``).

Two cells of a table each have a standard error over problems, but their difference is far less noisy than the
two together suggest: both are measured on the same problems, and most of a problem's difficulty is shared. So
the difference is measured problem by problem.

* A side is ``METHOD[:ITERATION]``: a method's row label in the report (``debate``, ``majority_tokens``,
  ``multiagent_ft``) and an iteration (default: each run's last measured one), e.g. ``debate:0``,
  ``multiagent_ft:3``.
* Per-problem correctness is read from each run's saved eval debate (``iter_k/<split>/transcripts.jsonl``: the
  final answer's ``correct``), keyed by problem id. Runs pair by (model, dataset, seed); within a seed, problems
  pair by id. Both sides and every seed must hold the same problems (a dataset's problems are fixed across run
  seeds), else the comparison is refused.
* The estimate is the mean over seeds and problems of ``correct(A) - correct(B)``. The bootstrap resamples
  problems with replacement (seeded), each keeping its difference on every seed (the seeds are strata that every
  resample holds whole: a problem is the unit shared across them), and takes the 2.5 and 97.5 percentiles.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mafl.metrics.results import Results
from mafl.metrics.stats import CI_LEVEL
from mafl.run_folder import RunFolder

BOOTSTRAP_SAMPLES = 10_000


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a method's label and an iteration (None: each run's last)."""

    label: str
    iteration: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Side":
        """``debate``, ``debate:0``, ``multiagent_ft:3`` (a label holding ':' keeps it: only a number after the
        last ':' is an iteration)."""
        label, sep, tail = text.rpartition(":")
        if sep and tail.strip().isdigit() and label:
            return cls(label, int(tail))
        return cls(text)

    def __str__(self) -> str:
        return self.label if self.iteration is None else f"{self.label}:{self.iteration}"


@dataclass(frozen=True)
class PairedDifference:
    model: str
    dataset: str
    a: str
    b: str
    seeds: tuple
    problems: int
    a_accuracy: float
    b_accuracy: float
    difference: float  # mean over seeds and problems of correct(A) - correct(B)
    low: float | None
    high: float | None
    per_seed: tuple[float, ...]  # the difference on each seed, in the order of ``seeds``


def paired_bootstrap(diffs: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                     level: float = CI_LEVEL) -> tuple[float, float | None, float | None]:
    """(mean, low, high) of ``diffs`` (seeds x problems): the mean over all cells and the percentile interval of
    the mean over problems resampled with replacement, every seed of a problem kept together."""
    diffs = np.atleast_2d(np.asarray(diffs, dtype=float))
    per_problem = diffs.mean(axis=0)  # every seed weighs the same: all hold the same problems
    mean = float(per_problem.mean())
    n = per_problem.size
    if n < 2 or samples < 2:
        return mean, None, None
    rng = np.random.default_rng(seed)
    stats = per_problem[rng.integers(0, n, size=(samples, n))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return mean, float(low), float(high)


def run_iterations(r: Results, split: str) -> list[int]:
    return sorted({x.iteration for x in r.records if x.split == split and x.metric == "accuracy/debate"})


def correctness(r: Results, iteration: int | None, split: str) -> tuple[int, dict[str, bool]]:
    """(iteration, {problem id: whether the final answer is right}) of one run, from its saved transcripts."""
    if r.path is None:
        raise ValueError(f"{r.method} seed {r.seed}: a results file read from a run folder is needed")
    measured = run_iterations(r, split)
    k = iteration if iteration is not None else (measured[-1] if measured else 0)
    path = RunFolder(Path(r.path).parent).transcripts(k, split)
    if not path.is_file():
        raise ValueError(f"{path}: no saved {split} debate of iteration {k} (measured: "
                         f"{', '.join(map(str, measured)) or 'none'})")
    out: dict[str, bool] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    out[str(row["problem"]["id"])] = bool(row["correct"])
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}:{lineno}: not a transcript ({e})") from e
    return k, out


def compare(results: Sequence[Results], a: Side, b: Side, *, split: str = "eval",
            samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> list[PairedDifference]:
    """A - B for every (model, dataset) that has runs of both sides on common seeds; a ValueError for a side with
    no run, no common seed, runs that did not answer the same problems, or that started from different base
    weights."""
    labels = sorted({r.method for r in results})
    for side in (a, b):
        if side.label not in labels:
            raise ValueError(f"--compare: no run of method {side.label!r} (methods: {', '.join(labels)})")
    by = {}
    for r in results:
        by.setdefault((r.model, r.dataset, r.method), {})[str(r.seed)] = r
    out = []
    for model, dataset in dict.fromkeys((m, d) for m, d, _ in by):
        runs_a, runs_b = by.get((model, dataset, a.label)), by.get((model, dataset, b.label))
        if not runs_a or not runs_b:
            continue
        seeds = sorted(set(runs_a) & set(runs_b))
        if not seeds:
            raise ValueError(f"--compare {a} {b}: no seed has runs of both on {model}, {dataset} "
                             f"(seeds {sorted(runs_a)} and {sorted(runs_b)})")
        rows_a, rows_b, problems = [], [], None
        for s in seeds:
            wa, wb = runs_a[s].model_weights, runs_b[s].model_weights
            if wa and wb and wa != wb:
                from mafl.model_weights import short_weights

                raise ValueError(f"--compare {a} {b}: seed {s} started from different base weights "
                                 f"({short_weights(wa)} and {short_weights(wb)}: another recipe, model folder or "
                                 f"kind of CPU): not a paired comparison")
            ka, ca = correctness(runs_a[s], a.iteration, split)
            kb, cb = correctness(runs_b[s], b.iteration, split)
            if set(ca) != set(cb):
                raise ValueError(f"--compare {a} {b}: seed {s} answered different problems ({len(ca)} and {len(cb)} "
                                 f"problems, {len(set(ca) ^ set(cb))} not in both): not a paired comparison")
            if problems is None:
                problems = sorted(ca)
            elif set(problems) != set(ca):
                raise ValueError(f"--compare {a} {b}: seed {s} answered other problems than seed {seeds[0]}; "
                                 f"the dataset's problems must be the same for every seed")
            rows_a.append([ca[p] for p in problems])
            rows_b.append([cb[p] for p in problems])
        xa, xb = np.asarray(rows_a, dtype=float), np.asarray(rows_b, dtype=float)
        mean, low, high = paired_bootstrap(xa - xb, samples=samples, seed=seed)
        out.append(PairedDifference(model, dataset, str(a), str(b), tuple(seeds), len(problems), float(xa.mean()),
                                    float(xb.mean()), mean, low, high, tuple(float(d) for d in (xa - xb).mean(axis=1))))
    if not out:
        raise ValueError(f"--compare {a} {b}: no model and dataset has runs of both")
    return out


def comparison_table(diffs: Sequence[PairedDifference]) -> str:
    """Markdown: one row per comparison and (model, dataset), in points of accuracy."""
    from mafl.reporting.aggregate import markdown_table

    pts = lambda x: f"{100 * x:+.1f}"  # noqa: E731
    rows = [[d.model, d.dataset, d.a, d.b, str(len(d.seeds)), str(d.problems), f"{100 * d.a_accuracy:.1f}",
             f"{100 * d.b_accuracy:.1f}", pts(d.difference),
             f"[{pts(d.low)}, {pts(d.high)}]" if d.low is not None else "–",
             " ".join(pts(x) for x in d.per_seed)] for d in diffs]
    return markdown_table(["model", "dataset", "A", "B", "seeds", "problems", "A (%)", "B (%)", "A − B (points)",
                           "95% paired CI", "A − B per seed"], rows)
