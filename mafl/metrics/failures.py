"""Where the society loses a right answer it had: the pool's oracle, the right answers voted out, and how fast
the answers collapse (the failure measures of "debate or vote", issue 24; conformity and persuasion, the adoption
of a wrong or a right majority, are in :mod:`mafl.metrics.dynamics`).

* ``oracle/round<r>``: the share of problems whose gold answer is among round r's answers (``turn.correct``; a
  cut-off or unreadable answer is never right): the pool's pass@N. ``oracle/round1`` is what the society had
  before anyone read anyone.
* ``voted_out``: the share of problems whose gold answer is among round 1's answers but whose final answer (the
  majority vote of the last round) is wrong; ``voted_out/round<r>`` the same for the answers of round r, so the
  last round's is what its own vote threw away.
* ``entropy/round<r>``: per problem, the Shannon entropy in bits of round r's answers, clustered by the task's
  equivalence (``4`` and ``4.0`` are one answer, :func:`mafl.tasks.vote.cluster`); an unreadable or cut-off answer
  agrees with nobody (a cluster of its own). 0 when every agent gives one answer, ``log2(N)`` when all N differ.

Society-level means over problems (their per-agent versions are ``accuracy/agent_*``). Ground truth is used to
measure, never to train.
"""
from __future__ import annotations

import math
from typing import Sequence

from mafl.debate.transcript import Transcript
from mafl.metrics.stats import MetricRecord, mean_record
from mafl.tasks.base import Task

ORACLE, VOTED_OUT, ENTROPY = "oracle", "voted_out", "entropy"


def round_metric(name: str, round_number: int) -> str:
    """``oracle/round1``, ``voted_out/round2``, ``entropy/round1``: ``name`` of round ``round_number``."""
    return f"{name}/round{round_number}"


def answer_entropy(task: Task, answers: Sequence[str | None]) -> float:
    """The entropy (bits) of one round's answers: clusters of equivalent answers, each unreadable one alone."""
    from mafl.tasks.vote import cluster

    if not answers:
        return 0.0
    _, members = cluster(task, answers)
    sizes = [len(m) for m in members] + [1] * sum(a is None for a in answers)
    total = len(answers)
    return float(-sum(k / total * math.log2(k / total) for k in sizes))


def failure_records(transcripts: Sequence[Transcript], task: Task, *, iteration: int, split: str, samples: int,
                    seed: int) -> list[MetricRecord]:
    """The records of the module docstring, for every round the debates share."""
    if not transcripts:
        return []
    common = dict(iteration=iteration, split=split, samples=samples, seed=seed)
    rounds = min(len(t.rounds) for t in transcripts)
    present = [[any(u.correct for u in t.rounds[r]) for t in transcripts] for r in range(rounds)]
    records = [mean_record([float(p and not t.correct) for p, t in zip(present[0], transcripts)],
                           metric=VOTED_OUT, **common)]
    for r in range(rounds):
        records += [
            mean_record([float(p) for p in present[r]], metric=round_metric(ORACLE, r + 1), **common),
            mean_record([float(p and not t.correct) for p, t in zip(present[r], transcripts)],
                        metric=round_metric(VOTED_OUT, r + 1), **common),
            mean_record([answer_entropy(task, [u.answer for u in t.rounds[r]]) for t in transcripts],
                        metric=round_metric(ENTROPY, r + 1), **common),
        ]
    return records
