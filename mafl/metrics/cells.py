"""One cell of a table: a metric's value ± its standard error, in % with one decimal for accuracies and consensus,
tokens with one, anything else with three, ``–`` when not measured; what the console summary of a run
(mafl/summary.py) and the reports across runs (mafl/reporting/) share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mafl.metrics.dynamics import ADOPT, CONFORMITY, PERSUASION
from mafl.metrics.stats import MetricRecord

PERCENT_PREFIXES = ("accuracy", "consensus", "cutoff", "flips", "moves", ADOPT, CONFORMITY, PERSUASION, "oracle",
                    "voted_out")
MISSING = "–"


def is_percent(metric: str) -> bool:
    return metric.startswith(PERCENT_PREFIXES)


def unit(metric: str) -> str:
    if is_percent(metric):
        return "%"
    return "per token" if metric.startswith(("kl", "nll")) else "bits" if metric.startswith("entropy") else ""


@dataclass(frozen=True)
class Cell:
    value: float
    stderr: float | None
    runs: int  # > 1: mean ± SE across runs; 1: the run's own stderr

    @classmethod
    def of(cls, record: MetricRecord) -> "Cell":
        return cls(record.value, record.stderr, 1)


def society_record(records: Sequence[MetricRecord], metric: str, iteration: int | None = None,
                   split: str = "eval") -> MetricRecord | None:
    """The society-level record (``agent`` and ``other`` None) of ``metric`` at ``iteration`` (None: any)."""
    return next((r for r in records if r.is_of(metric, split) and (iteration is None or r.iteration == iteration)),
                None)


def format_cell(cell: Cell | MetricRecord | None, metric: str, seeds: bool = False) -> str:
    """``62.0 ± 1.4``, ``0.210 ± 0.003 (n=3)``, or ``–``; ``seeds``: say ``(n=1)`` for one run too."""
    if cell is None:
        return MISSING
    if isinstance(cell, MetricRecord):
        cell = Cell.of(cell)
    scale, digits = (100.0, 1) if is_percent(metric) else (1.0, 1) if metric.startswith("tokens/") else (1.0, 3)
    text = f"{cell.value * scale:.{digits}f}"
    if cell.stderr is not None:
        text += f" ± {cell.stderr * scale:.{digits}f}"
    return text + (f" (n={cell.runs})" if cell.runs > 1 or seeds else "")
