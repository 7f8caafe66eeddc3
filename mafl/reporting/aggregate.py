"""Aggregation across runs, used by ``mafl report``, the plots and the notebook: runs grouped by model, method
and dataset, a metric's curve over iterations, seeds combined (one cell's format and the society-level records,
which the console summary shares, are mafl/metrics/cells.py).

* One run: a metric's value ± its own standard error (over problems).
* Several runs of one model, method and dataset (seeds): the mean across runs ± its standard error across runs,
  with the one formula of :func:`mafl.metrics.stats.mean_stderr` (``sd/sqrt(k)``, ``ddof=1``), marked ``(n=k)``.
* A cell: accuracies and consensus in % with one decimal, tokens with one, anything else with three, ``–`` when not
  measured.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from mafl.metrics.dynamics import (
    ADOPT, CELLS, CONFORMITY, MOVES, PERSUASION, adopt_metric, consensus_metric, flip_metric, move_metric,
)
from mafl.metrics.cells import MISSING, Cell, format_cell, is_percent, society_record, unit  # noqa: F401
from mafl.metrics.results import Results
from mafl.metrics.stats import mean_stderr

DIVERSITY_METRICS = [
    "consensus", "consensus/round1", "kl/agents", "kl/base", "nll", "embedding_dissimilarity",
    "kl/agents_final", "kl/base_final", "nll_final", "embedding_dissimilarity_final",
]
# what the answers cost and what their token budgets cut off (mafl.metrics.cutoff)
TOKENS = "tokens/total"  # generated tokens per problem: the cost beside every accuracy
BUDGET_METRICS = ["answers_per_problem", "tokens/answers", "tokens/summaries", TOKENS, "cutoff/round1",
                  "cutoff/round2", "cutoff/round3", "cutoff/summary"]
# where a right answer the society had is lost, and how fast its answers collapse (mafl.metrics.failures and the
# adoption split of mafl.metrics.dynamics), for debates of up to 4 rounds
FAILURE_METRICS = (["oracle/round1", "voted_out"]
                   + [adopt_metric(r, name) for r in (1, 2, 3) for name in (CONFORMITY, PERSUASION)]
                   + [f"entropy/round{r}" for r in (1, 2, 3, 4)] + [f"oracle/round{r}" for r in (2, 3, 4)])
# how answers move between rounds (mafl.metrics.dynamics): the transitions of debates of up to 4 rounds
# (and the consensus of every round, round 1's also among the diversity metrics)
DYNAMICS_METRICS = ([flip_metric(r, cell) for r in (1, 2, 3) for cell in CELLS]
                    + [move_metric(r, move) for r in (1, 2, 3) for move in MOVES]
                    + [adopt_metric(r) for r in (1, 2, 3)] + [consensus_metric(r) for r in (1, 2, 3, 4)])
# the columns of one agent's dynamics in a round transition: (label, metric prefix, suffix)
AGENT_DYNAMICS = ([(cell.replace("_", "→"), "flips", f"/{cell}") for cell in CELLS]
                  + [(move, "moves", f"/{move}") for move in MOVES] + [("adopts others' majority", ADOPT, ""),
                                                                         ("conformity", CONFORMITY, ""),
                                                                         ("persuasion", PERSUASION, "")])
Group = tuple[str, str, str]  # (model, method label, dataset)


def group_runs(results: Sequence[Results]) -> dict[Group, list[Results]]:
    """Runs by (model, method label, dataset), methods in the order they are registered (the paper's)."""
    from mafl.methods import METHODS

    rank = {m: i for i, m in enumerate(METHODS)}
    groups: dict[Group, list[Results]] = defaultdict(list)
    names: dict[Group, str] = {}
    for r in results:
        group = (r.model, r.method, r.dataset)
        groups[group].append(r)
        names[group] = str((r.config.get("method") or {}).get("name", r.method))
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], rank.get(names[kv[0]], len(rank)), kv[0][1],
                                                        kv[0][2])))


def combine(values: Sequence[tuple[float, float | None]]) -> Cell:
    """One run: its value and stderr. Several: the mean across runs and its standard error."""
    if len(values) == 1:
        return Cell(values[0][0], values[0][1], 1)
    mean, se = mean_stderr([v for v, _ in values])
    return Cell(mean, se, len(values))


def final_cell(runs: Sequence[Results], metric: str, split: str) -> Cell | None:
    """The metric at each run's last measured iteration, combined across runs."""
    finals = [recs[-1] for recs in (r.select(metric, split) for r in runs) if recs]
    return combine([(x.value, x.stderr) for x in finals]) if finals else None


def curve(runs: Sequence[Results], metric: str, split: str, agent: int | None = None) -> dict[int, Cell]:
    """The metric (of the society, or of ``agent``) per iteration, combined across the runs that measured that
    iteration."""
    by_iteration: dict[int, list[tuple[float, float | None]]] = defaultdict(list)
    for r in runs:
        for rec in r.select(metric, split, agent):
            by_iteration[rec.iteration].append((rec.value, rec.stderr))
    return {k: combine(v) for k, v in sorted(by_iteration.items())}


def final_cells(groups: dict[Group, list[Results]], model: str, method: str, datasets: Sequence[str], metric: str,
                split: str, seeds: bool = False) -> list[str]:
    """One row of Table 1: the metric at the final iteration in each dataset's column (``–`` where the model and
    method have no run on that dataset)."""
    return [format_cell(final_cell(groups[(model, method, d)], metric, split), metric, seeds=seeds)
            if (model, method, d) in groups else MISSING for d in datasets]


def answers_per_problem(runs: Sequence[Results], split: str) -> str:
    """The answers generated per problem at the runs' final iteration (``–`` for runs that did not record it)."""
    values = sorted({round(recs[-1].value, 1) for recs in (r.select("answers_per_problem", split) for r in runs)
                     if recs})
    return "/".join(f"{v:g}" for v in values) if values else MISSING


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
