"""How the agents of a debate agreed in round 1, and what each one's last-round turn did with that.

* **Agreement pattern** of one problem: the agents' round-1 answers clustered by the task's equivalence
  (:func:`mafl.tasks.vote.cluster`: ``4`` and ``4.0`` are one answer), the cluster sizes largest first joined by
  ``-`` (``2-1``, ``1-1-1``); a unanimous round is written ``N-0`` (``3-0``); each unreadable answer (none could be
  read, or the turn was cut off) adds a ``?`` (``2-?``: two agree, the third is unreadable; ``?-?-?``).
* **Behaviour** of an agent's last-round turn (its critic with critics), against the round-1 answers, as the
  debate dynamics count it (:func:`mafl.metrics.dynamics.move_of`): ``kept`` (equivalent to its own round-1
  answer; this wins when its own answer is also another's), ``adopted`` (equivalent to the round-1 answer of an
  agent it read, not its own), ``new`` (any other readable answer); and here ``unreadable`` apart from ``new``.
"""
from __future__ import annotations

from typing import Sequence

from mafl.metrics.dynamics import MOVES, move_of
from mafl.tasks.base import Task
from mafl.tasks.vote import cluster

BEHAVIOURS = (*MOVES, "unreadable")


def agreement_pattern(task: Task, answers: Sequence[str | None]) -> str:
    _, members = cluster(task, answers)
    sizes = sorted((len(m) for m in members), reverse=True)
    unreadable = ["?"] * sum(a is None for a in answers)
    if len(sizes) == 1 and not unreadable:
        return f"{sizes[0]}-0"
    return "-".join([*map(str, sizes), *unreadable])


def pattern_order(pattern: str) -> tuple:
    """Most agreement first: ``3-0``, ``2-1``, ``2-?``, ``1-1-1``, ..."""
    parts = pattern.split("-")
    sizes = [int(p) for p in parts if p != "?"]
    return (-(sizes[0] if sizes else 0), parts.count("?"), len(parts), pattern)


def same(task: Task, a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and (a == b or task.is_equivalent(a, b))


def behaviour(task: Task, final: str | None, own: str | None, read: Sequence[str | None]) -> str:
    """``final``: the agent's last-round answer; ``own``: its round-1 answer; ``read``: the round-1 answers of
    the agents it read."""
    return "unreadable" if final is None else move_of(task, own, final, read)
