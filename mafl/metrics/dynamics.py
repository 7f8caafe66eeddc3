"""How answers move between rounds: the flip matrix of every round transition.

For the transition from round r to round r+1 (``round1-2``, ``round2-3``, ...), each agent's answer is right or
wrong (``turn.correct``; a cut-off or unreadable answer is wrong) in both rounds, so it falls in one of four
cells: ``right_right``, ``wrong_right`` (what the paper's critics exist for), ``right_wrong`` and ``wrong_wrong``.
Records ``flips/round<r>-<r+1>/<cell>``: with ``agent=None`` the mean over problems of the share of agents in the
cell (the four cells sum to 1), with ``agent=n`` the share of problems where agent n's answers fell in it.

And where each new answer comes from: ``moves/round<r>-<r+1>/<move>``, ``kept`` (the agent's own answer of round
r, ``task.is_equivalent``), ``adopted`` (not its own but one another agent gave in round r) or ``new`` (neither;
also a cut-off or unreadable answer), the same two ways. A critic that only copies shows ``adopted``; one that
re-solves the problem and slips shows ``new``.

Ground truth is used to measure, never to train.
"""
from __future__ import annotations

from typing import Sequence

from mafl.debate.transcript import Transcript
from mafl.metrics.stats import MetricRecord, mean_record
from mafl.tasks.base import Task

CELLS = ("right_right", "wrong_right", "right_wrong", "wrong_wrong")
MOVES = ("kept", "adopted", "new")


def flip_metric(round_from: int, cell: str) -> str:
    """``flips/round1-2/wrong_right``: the metric name of one cell of the transition from ``round_from``."""
    return f"flips/round{round_from}-{round_from + 1}/{cell}"


def move_metric(round_from: int, move: str) -> str:
    """``moves/round1-2/adopted``: the metric name of one move of the transition from ``round_from``."""
    return f"moves/round{round_from}-{round_from + 1}/{move}"


def cell_of(before: bool, after: bool) -> str:
    return f"{'right' if before else 'wrong'}_{'right' if after else 'wrong'}"


def move_of(task: Task, before, after, read) -> str:
    """``kept``, ``adopted`` or ``new``: where an agent's answer ``after`` comes from, given its own answer
    ``before`` and the other agents' answers ``read`` of the same round."""
    if after is None:
        return "new"
    if task.is_equivalent(after, before):
        return "kept"
    return "adopted" if any(task.is_equivalent(after, a) for a in read if a is not None) else "new"


def flip_records(transcripts: Sequence[Transcript], task: Task | None = None, *, iteration: int, split: str,
                 samples: int, seed: int) -> list[MetricRecord]:
    """The flip cells of every round transition; with ``task``, the moves too (see the module docstring)."""
    if not transcripts:
        return []
    common = dict(iteration=iteration, split=split, samples=samples, seed=seed)
    records = []

    def shares(labels: list[list[str]], names: Sequence[str], metric_of) -> None:
        agents = min(len(x) for x in labels)
        for name in names:
            metric = metric_of(name)
            records.append(mean_record([x.count(name) / len(x) for x in labels], metric=metric, **common))
            records.extend(mean_record([float(x[n] == name) for x in labels], metric=metric, agent=n, **common)
                           for n in range(agents))

    for r in range(min(len(t.rounds) for t in transcripts) - 1):
        cells = [[cell_of(a.correct, b.correct) for a, b in zip(t.rounds[r], t.rounds[r + 1])] for t in transcripts]
        shares(cells, CELLS, lambda cell: flip_metric(r + 1, cell))
        if task is not None:
            moves = [[move_of(task, a.answer, b.answer, [o.answer for o in t.rounds[r] if o.agent != a.agent])
                      for a, b in zip(t.rounds[r], t.rounds[r + 1])] for t in transcripts]
            shares(moves, MOVES, lambda move: move_metric(r + 1, move))
    return records
