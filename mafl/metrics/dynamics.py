"""How answers move between rounds: the flip matrix of every round transition.

For the transition from round r to round r+1 (``round1-2``, ``round2-3``, ...), each agent's answer is right or
wrong (``turn.correct``; a cut-off or unreadable answer is wrong) in both rounds, so it falls in one of four
cells: ``right_right``, ``wrong_right`` (what the paper's critics exist for), ``right_wrong`` and ``wrong_wrong``.
Records ``flips/round<r>-<r+1>/<cell>``: with ``agent=None`` the mean over problems of the share of agents in the
cell (the four cells sum to 1), with ``agent=n`` the share of problems where agent n's answers fell in it.
Ground truth is used to measure, never to train.
"""
from __future__ import annotations

from typing import Sequence

from mafl.debate.transcript import Transcript
from mafl.metrics.stats import MetricRecord, mean_record

CELLS = ("right_right", "wrong_right", "right_wrong", "wrong_wrong")


def flip_metric(round_from: int, cell: str) -> str:
    """``flips/round1-2/wrong_right``: the metric name of one cell of the transition from ``round_from``."""
    return f"flips/round{round_from}-{round_from + 1}/{cell}"


def cell_of(before: bool, after: bool) -> str:
    return f"{'right' if before else 'wrong'}_{'right' if after else 'wrong'}"


def flip_records(transcripts: Sequence[Transcript], *, iteration: int, split: str, samples: int,
                 seed: int) -> list[MetricRecord]:
    if not transcripts:
        return []
    common = dict(iteration=iteration, split=split, samples=samples, seed=seed)
    records = []
    for r in range(min(len(t.rounds) for t in transcripts) - 1):
        pairs = [[cell_of(a.correct, b.correct) for a, b in zip(t.rounds[r], t.rounds[r + 1])] for t in transcripts]
        agents = min(len(p) for p in pairs)
        for cell in CELLS:
            metric = flip_metric(r + 1, cell)
            records.append(mean_record([p.count(cell) / len(p) for p in pairs], metric=metric, **common))
            records += [mean_record([float(p[n] == cell) for p in pairs], metric=metric, agent=n, **common)
                        for n in range(agents)]
    return records
