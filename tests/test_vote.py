"""The majority vote: clusters by the task's equivalence, None never wins, ties go to the earliest agent."""
from __future__ import annotations

import pytest

from mafl.tasks import Task, get_task, majority_vote


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
    vote = majority_vote(task, ["b", "A", "a", "B", "a"])
    assert vote.winner == "A"
    assert vote.clusters == [("A", 3), ("b", 2)]
    assert vote.members == [[1, 2, 4], [0, 3]]
    assert task.calls > 0


def test_math_answers_in_different_forms_form_one_cluster():
    vote = majority_vote(get_task("math"), [r"\frac12", "3", "0.5", r"\dfrac{1}{2}"])
    assert vote.winner == r"\frac12"
    assert vote.clusters == [(r"\frac12", 3), ("3", 1)]


def test_numeric_answers_cluster_by_value():
    vote = majority_vote(get_task("gsm8k"), ["1,234", "12", "1234.00", "1.234"])
    assert vote.clusters == [("1,234", 2), ("12", 1), ("1.234", 1)]


def test_none_never_wins():
    task = get_task("arithmetic")
    assert majority_vote(task, [None, None, "5"]).winner == "5"
    assert majority_vote(task, [None, "5", None, None]).clusters == [("5", 1)]
    empty = majority_vote(task, [None, None, None])
    assert empty.winner is None and empty.clusters == [] and empty.members == []
    assert majority_vote(task, []).winner is None


@pytest.mark.parametrize("answers, winner", [
    (["3", "5"], "3"),
    (["5", "3"], "5"),
    (["3", "5", "5", "3"], "3"),  # 2-2: the cluster whose first member is agent 0
    ([None, "5", "3", "3", "5"], "5"),  # 2-2: first members are agents 1 and 2
    (["7", "3", "5", "5", "3"], "3"),  # 7 alone loses; 3 and 5 tie, 3 was said first
])
def test_ties_go_to_the_answer_given_first(answers, winner):
    assert majority_vote(get_task("arithmetic"), answers).winner == winner


def test_agrees_tells_who_voted_with_the_winner():
    vote = majority_vote(get_task("arithmetic"), ["4", "5", "5.0", None])
    assert [vote.agrees(i) for i in range(4)] == [False, True, True, False]
    assert not majority_vote(get_task("arithmetic"), [None]).agrees(0)
