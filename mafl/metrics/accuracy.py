"""Accuracy of a set of debates: of the debate's majority, of the round-1 majority and of each agent alone.

Every accuracy is a mean over problems of 0/1 outcomes, reported with the standard error ``sd/sqrt(n)``
(``ddof=1``) and a bootstrap interval (see :mod:`mafl.metrics.stats`).

* ``accuracy/debate``: the debate's final answer (majority vote of the last round, ``transcript.correct``).
* ``accuracy/round1_majority``: the majority vote of round 1 alone (what "majority" would answer), graded
  against the gold answer with ``task.is_equivalent``.
* ``accuracy/agent_round1``, ``accuracy/agent_final``: agent ``n``'s own answer in round 1 / in the last round
  (``turn.correct``), one record per agent (``agent=n``) and one for the society (``agent=None``: the mean
  over problems of the share of agents that are right).
"""
from __future__ import annotations

from typing import Sequence

from mafl.debate.transcript import Transcript
from mafl.metrics.stats import MetricRecord, mean_record
from mafl.tasks.base import Task


def round1_winner(task: Task, t: Transcript, seed: int) -> str | None:
    """The majority answer of round 1 (``mafl.tasks.vote.majority_vote``, a tie broken by a choice seeded from
    ``seed`` and the problem; a one-round debate's own vote), None when no answer was read."""
    from mafl.debate.engine import derive_seed
    from mafl.tasks.vote import majority_vote

    if len(t.rounds) == 1:
        return t.final_answer
    answers = [turn.answer for turn in t.rounds[0]]
    return majority_vote(task, answers, tie_seed=derive_seed(seed, t.problem.id, "round1_vote")).winner


def accuracy_records(
    transcripts: Sequence[Transcript], task: Task, *, iteration: int, split: str, samples: int, seed: int
) -> list[MetricRecord]:
    if not transcripts:
        return []
    common = dict(iteration=iteration, split=split, samples=samples, seed=seed)
    records = [
        mean_record([float(t.correct) for t in transcripts], metric="accuracy/debate", **common),
        mean_record(
            [float(task.is_equivalent(round1_winner(task, t, seed), t.problem.answer)) for t in transcripts],
            metric="accuracy/round1_majority", **common,
        ),
    ]
    for name, pick in (("accuracy/agent_round1", lambda t: t.rounds[0]), ("accuracy/agent_final", lambda t: t.rounds[-1])):
        turns = [pick(t) for t in transcripts]
        records.append(mean_record([sum(u.correct for u in ts) / len(ts) for ts in turns], metric=name, **common))
        for agent in range(min(len(ts) for ts in turns)):
            records.append(mean_record([float(ts[agent].correct) for ts in turns], metric=name, agent=agent, **common))
    return records
