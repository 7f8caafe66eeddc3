"""The majority vote: clusters by the task's equivalence, None never wins, ties are a seeded choice that favours
no agent; the public code's consensus rule."""
from __future__ import annotations

import pytest

from mafl.tasks import Task, get_task, majority_vote
from mafl.tasks.vote import public_consensus


class CaseInsensitive(Task):
    """A stub whose equivalence is not string equality, to see that the vote uses the task's."""

    name = "stub"

    def __init__(self):
        self.calls = 0

    def extract_answer(self, response):
        return response

    def is_equivalent(self, pred, gold):
        self.calls += 1
        return pred is not None and pred.lower() == gold.lower()

    def gold_answer(self, row):
        return row["answer"]


def test_clusters_by_equivalence_not_by_string():
    task = CaseInsensitive()
    vote = majority_vote(task, ["b", "A", "a", "B", "a"], tie_seed=0)
    assert vote.winner == "A"
    assert vote.clusters == [("A", 3), ("b", 2)]
    assert vote.members == [[1, 2, 4], [0, 3]]
    assert task.calls > 0


def test_math_answers_in_different_forms_form_one_cluster():
    vote = majority_vote(get_task("math"), [r"\frac12", "3", "0.5", r"\dfrac{1}{2}"], tie_seed=0)
    assert vote.winner == r"\frac12"
    assert vote.clusters == [(r"\frac12", 3), ("3", 1)]


def test_numeric_answers_cluster_by_value():
    vote = majority_vote(get_task("gsm8k"), ["1,234", "12", "1234.00", "1.234"], tie_seed=0)
    assert vote.clusters == [("1,234", 2), ("12", 1), ("1.234", 1)]


def test_none_never_wins():
    task = get_task("arithmetic")
    assert majority_vote(task, [None, None, "5"], tie_seed=0).winner == "5"
    assert majority_vote(task, [None, "5", None, None], tie_seed=0).clusters == [("5", 1)]
    empty = majority_vote(task, [None, None, None], tie_seed=0)
    assert empty.winner is None and empty.clusters == [] and empty.members == []
    assert majority_vote(task, [], tie_seed=0).winner is None


@pytest.mark.parametrize("answers, winner", [
    (["3", "5", "5"], "5"),
    (["5", "3", None, "3"], "3"),
    (["7", "3", "5", "5", "3", "3"], "3"),
])
def test_a_clear_winner_does_not_depend_on_the_seed(answers, winner):
    assert {majority_vote(get_task("arithmetic"), answers, tie_seed=s).winner for s in range(20)} == {winner}


def test_ties_favour_no_agent_over_many_seeds():
    """A 1-1-1 split: each agent's answer wins about a third of the time (chi-square test, 3000 seeds)."""
    task = get_task("arithmetic")
    wins = [0, 0, 0]
    n = 3000
    for s in range(n):
        vote = majority_vote(task, ["3", "4", "5"], tie_seed=s)
        wins[int(vote.winner) - 3] += 1
    chi2 = sum((w - n / 3) ** 2 / (n / 3) for w in wins)
    assert chi2 < 13.8, wins  # p = 0.001 at 2 degrees of freedom
    # a 2-2 tie between agents (0, 1) and (2, 3), and with None in front
    firsts = [majority_vote(task, [None, "1", "1", "2", "2"], tie_seed=s).winner for s in range(n)]
    assert abs(firsts.count("1") / n - 0.5) < 0.04


def test_a_tie_is_the_same_for_the_same_seed():
    task = get_task("arithmetic")
    assert [majority_vote(task, ["3", "4"], tie_seed=s).winner for s in range(50)] == \
        [majority_vote(task, ["3", "4"], tie_seed=s).winner for s in range(50)]
    vote = majority_vote(task, ["3", "4", "4", "3", "9"], tie_seed=1)
    assert vote.clusters[0][0] == vote.winner and [c for _, c in vote.clusters] == [2, 2, 1]


def test_share_is_the_winners_votes_over_the_agents():
    task = get_task("arithmetic")
    assert majority_vote(task, ["3", "3", "4"], tie_seed=0).share(3) == pytest.approx(2 / 3)
    assert majority_vote(task, [None, None, None], tie_seed=0).share(3) == 0.0


@pytest.mark.parametrize("answers, consensus", [
    (["3", "5"], "5"),            # a tie: the largest answer string, whatever the order
    (["5", "3"], "5"),
    (["10", "9"], "9"),           # strings, not numbers: "9" > "10"
    (["3", "3", "5"], "3"),       # the largest cluster wins
    ([None, "4", None], "4"),     # answers that could not be read do not count
    ([None, None], None),
])
def test_public_consensus_reproduces_the_public_code(answers, consensus):
    assert public_consensus(get_task("arithmetic"), answers) == consensus


def test_agrees_tells_who_voted_with_the_winner():
    vote = majority_vote(get_task("arithmetic"), ["4", "5", "5.0", None], tie_seed=0)
    assert [vote.agrees(i) for i in range(4)] == [False, True, True, False]
    assert not majority_vote(get_task("arithmetic"), [None], tie_seed=0).agrees(0)
