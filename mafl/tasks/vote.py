"""The majority vote over the agents' final answers, clustering answers by the task's equivalence.

    vote = majority_vote(task, ["1/2", "0.5", "3", None])
    vote.winner     # "1/2"  (the first answer of the largest cluster)
    vote.clusters   # [("1/2", 2), ("3", 1)]
    vote.members    # [[0, 1], [2]]  (agent indices per cluster)

Rules:
- an answer joins the first cluster (in order of appearance) whose representative - the cluster's first
  answer - it is equivalent to (``task.is_equivalent(answer, representative)``); else it starts a new one;
- None (no answer could be read) never joins or wins; all None -> winner None, no clusters;
- clusters are listed by votes, most first; **ties go to the cluster whose first member has the lowest agent
  index** (the answer given earliest), so the vote is deterministic.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mafl.tasks.base import Task


@dataclass(frozen=True)
class Vote:
    winner: str | None
    clusters: list[tuple[str, int]] = field(default_factory=list)  # (representative answer, votes), most first
    members: list[list[int]] = field(default_factory=list)  # agent indices of each cluster, same order

    def agrees(self, agent: int) -> bool:
        """Whether agent ``agent``'s answer is in the winning cluster."""
        return bool(self.members) and agent in self.members[0]


def majority_vote(task: Task, answers: Sequence[str | None]) -> Vote:
    """The vote of one round: see the module doc for the clustering and tie rule."""
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
    # sorted() is stable and clusters were created in order of their first member: ties keep the earliest
    order = sorted(range(len(representatives)), key=lambda k: -len(members[k]))
    clusters = [(representatives[k], len(members[k])) for k in order]
    return Vote(winner=clusters[0][0] if clusters else None, clusters=clusters, members=[members[k] for k in order])
