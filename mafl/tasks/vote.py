"""The majority vote over the agents' answers, clustering answers by the task's equivalence.

    vote = majority_vote(task, ["1/2", "0.5", "3", None], tie_seed=7)
    vote.winner     # "1/2"  (the representative of the largest cluster)
    vote.clusters   # [("1/2", 2), ("3", 1)]
    vote.members    # [[0, 1], [2]]  (agent indices per cluster)
    vote.share(4)   # 0.5: the winner's votes over the number of agents

Rules:
- an answer joins the first cluster (in order of appearance) whose representative - the cluster's first
  answer - it is equivalent to (``task.is_equivalent(answer, representative)``); else it starts a new one;
- None (no answer could be read, or the turn was cut off) never joins or wins; all None -> winner None;
- clusters are listed by votes, most first. **A tie for the most votes is broken by a seeded choice** among the
  tied clusters (``random.Random(tie_seed)``), so no agent is favoured by its position and the vote is still
  deterministic for a given seed (the debate derives ``tie_seed`` from the run seed and the problem's id).

:func:`public_consensus` is the rule of the paper's public code (``most_frequent`` in its ``ft_generator.py``
and ``ft_critic.py``): the largest cluster, a tie going to the lexicographically largest answer string.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from mafl.tasks.base import Task


@dataclass(frozen=True)
class Vote:
    winner: str | None
    clusters: list[tuple[str, int]] = field(default_factory=list)  # (representative answer, votes), winner first
    members: list[list[int]] = field(default_factory=list)  # agent indices of each cluster, same order

    def agrees(self, agent: int) -> bool:
        """Whether agent ``agent``'s answer is in the winning cluster."""
        return bool(self.members) and agent in self.members[0]

    def share(self, agents: int) -> float:
        """The winner's votes as a share of ``agents`` (0 when nothing won)."""
        return self.clusters[0][1] / agents if self.clusters and agents else 0.0


def cluster(task: Task, answers: Sequence[str | None]) -> tuple[list[str], list[list[int]]]:
    """(representatives, members) in order of first appearance; None answers are left out."""
    representatives: list[str] = []
    members: list[list[int]] = []
    for agent, answer in enumerate(answers):
        if answer is None:
            continue
        for k, rep in enumerate(representatives):
            if answer == rep or task.is_equivalent(answer, rep):
                members[k].append(agent)
                break
        else:
            representatives.append(answer)
            members.append([agent])
    return representatives, members


def majority_vote(task: Task, answers: Sequence[str | None], *, tie_seed: int) -> Vote:
    """The vote of one round: see the module doc for the clustering and the seeded tie rule."""
    representatives, members = cluster(task, answers)
    if not representatives:
        return Vote(winner=None)
    top = max(len(m) for m in members)
    tied = [k for k in range(len(members)) if len(members[k]) == top]
    first = tied[random.Random(tie_seed).randrange(len(tied))] if len(tied) > 1 else tied[0]
    rest = sorted((k for k in range(len(members)) if k != first), key=lambda k: -len(members[k]))
    order = [first, *rest]
    clusters = [(representatives[k], len(members[k])) for k in order]
    return Vote(winner=representatives[first], clusters=clusters, members=[members[k] for k in order])


def public_consensus(task: Task, answers: Sequence[str | None]) -> str | None:
    """The public code's consensus: the largest cluster of the answers that could be read; on a tie, the
    largest answer string (it sorts ``zip(counts, answers)`` and takes the last). None when none was read."""
    representatives, members = cluster(task, answers)
    if not representatives:
        return None
    return sorted(zip((len(m) for m in members), representatives))[-1][1]
