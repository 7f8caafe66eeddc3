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

How often an agent gives in to the others: ``adopt_majority/round<r>-<r+1>``, over the agents whose round-r answer
differs from the answer a strict majority of the *other* agents gave in round r (with 3 agents: the two others
agree, and not with it), the share whose round-r+1 answer is that majority's. Per problem the share of such
agents, averaged over the problems that have one (``agent=None``); with ``agent=n`` the share of agent n's such
problems. Agents that never face a united opposition have no value.

Split by whether that majority is right (the failure measures of "debate or vote", issue 24):
``conformity/round<r>-<r+1>``, the same share over the agents facing a united majority of the others that is
*wrong* (how often the society talks an agent into an error), and ``persuasion/round<r>-<r+1>``, over those facing
a *right* one; the same two ways. Their facing agents together are ``adopt_majority``'s.

And how much the society agrees in each round: ``consensus/round<r>`` (r >= 2; ``consensus/round1`` is in
:mod:`mafl.metrics.diversity`), the share of agents whose round-r answer is that round's majority (the last
round's: the debate's final answer, so it equals ``consensus``).

Ground truth is used to measure, never to train.
"""
from __future__ import annotations

from typing import Sequence

from mafl.debate.transcript import Transcript
from mafl.metrics.stats import MetricRecord, mean_record
from mafl.tasks.base import Task

CELLS = ("right_right", "wrong_right", "right_wrong", "wrong_wrong")
MOVES = ("kept", "adopted", "new")
ADOPT = "adopt_majority"
CONFORMITY, PERSUASION = "conformity", "persuasion"  # adoption of a wrong / of a right majority of the others


def flip_metric(round_from: int, cell: str) -> str:
    """``flips/round1-2/wrong_right``: the metric name of one cell of the transition from ``round_from``."""
    return f"flips/round{round_from}-{round_from + 1}/{cell}"


def move_metric(round_from: int, move: str) -> str:
    """``moves/round1-2/adopted``: the metric name of one move of the transition from ``round_from``."""
    return f"moves/round{round_from}-{round_from + 1}/{move}"


def adopt_metric(round_from: int, name: str = ADOPT) -> str:
    """``adopt_majority/round1-2``: how often agents take up the others' majority between two rounds (``name``
    conformity / persuasion: a wrong / a right majority)."""
    return f"{name}/round{round_from}-{round_from + 1}"


def consensus_metric(round_number: int) -> str:
    """``consensus/round2``: the share of agents agreeing with round ``round_number``'s majority."""
    return f"consensus/round{round_number}"


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


def others_majority(task: Task, read: Sequence) -> str | None:
    """The answer held by a strict majority of ``read`` (the other agents' answers; an unreadable one counts
    against every answer), or None."""
    for a in read:
        if a is not None and sum(task.is_equivalent(b, a) for b in read if b is not None) * 2 > len(read):
            return a
    return None


def adoption(task: Task, before, after, read) -> float | None:
    """1.0 when the agent moved to the others' strict majority, 0.0 when it did not, None when the others had
    no strict majority or the agent already held it."""
    majority = others_majority(task, read)
    if majority is None or (before is not None and task.is_equivalent(before, majority)):
        return None
    return float(after is not None and task.is_equivalent(after, majority))


def facing(task: Task, before, after, read, gold: str) -> tuple[float | None, bool]:
    """(:func:`adoption`, whether the others' strict majority is right): what an agent facing the others did."""
    majority = others_majority(task, read)
    return adoption(task, before, after, read), majority is not None and task.is_equivalent(majority, gold)


def adoption_records(transcripts: Sequence[Transcript], task: Task, **common) -> list[MetricRecord]:
    """``adopt_majority/round<r>-<r+1>`` of every round transition, and its split by a wrong majority
    (``conformity``) or a right one (``persuasion``), society and per agent (module docstring)."""
    records = []
    for r in range(min(len(t.rounds) for t in transcripts) - 1):
        cells = [[facing(task, a.answer, b.answer, [o.answer for o in t.rounds[r] if o.agent != a.agent],
                         t.problem.answer) for a, b in zip(t.rounds[r], t.rounds[r + 1])] for t in transcripts]
        for name, keep in ((ADOPT, None), (CONFORMITY, False), (PERSUASION, True)):
            rows = [[v if keep is None or right == keep else None for v, right in row] for row in cells]
            records += _facing_records(rows, adopt_metric(r + 1, name), **common)
    return records


def _facing_records(rows: Sequence[Sequence[float | None]], metric: str, **common) -> list[MetricRecord]:
    """The society's record (per problem the share of its facing agents that moved, over the problems that have
    one) and each agent's (the share of its facing problems); None: not facing."""
    records = []
    society = [sum(v for v in row if v is not None) / n for row in rows if (n := sum(v is not None for v in row))]
    if society:
        records.append(mean_record(society, metric=metric, **common))
    for n in range(min(len(row) for row in rows)):
        mine = [row[n] for row in rows if row[n] is not None]
        if mine:
            records.append(mean_record(mine, metric=metric, agent=n, **common))
    return records


def round_consensus_records(transcripts: Sequence[Transcript], task: Task, *, seed: int,
                            **common) -> list[MetricRecord]:
    """``consensus/round<r>`` for every round r >= 2 (module docstring); none for a single agent."""
    from mafl.debate.engine import derive_seed
    from mafl.tasks.vote import majority_vote

    if min(t.num_agents for t in transcripts) < 2:
        return []
    last = min(len(t.rounds) for t in transcripts)
    records = []
    for r in range(1, last):
        shares = []
        for t in transcripts:
            answers = [u.answer for u in t.rounds[r]]
            winner = (t.final_answer if r == len(t.rounds) - 1 else
                      majority_vote(task, answers, tie_seed=derive_seed(seed, t.problem.id, f"round{r + 1}_vote")).winner)
            shares.append(sum(task.is_equivalent(a, winner) for a in answers) / len(answers)
                          if winner is not None else 0.0)
        records.append(mean_record(shares, metric=consensus_metric(r + 1), seed=seed, **common))
    return records


def flip_records(transcripts: Sequence[Transcript], task: Task | None = None, *, iteration: int, split: str,
                 samples: int, seed: int) -> list[MetricRecord]:
    """The flip cells of every round transition; with ``task``, the moves, the adoption of the others' majority
    and the consensus of every round too (see the module docstring)."""
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
    if task is not None:
        records += adoption_records(transcripts, task, **common)
        records += round_consensus_records(transcripts, task, iteration=iteration, split=split, samples=samples,
                                           seed=seed)
    return records
