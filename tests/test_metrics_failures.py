"""The failure measures of "debate or vote" (issue 24) on hand-made debates: the pool's oracle, right answers voted
out, conformity and persuasion (adoption split by a wrong or a right majority), answer entropy and the tokens
generated per problem; ties, unreadable answers and equivalent spellings (4 and 4.0) included."""
from __future__ import annotations

import math

import pytest

from mafl.debate.transcript import Transcript, Turn
from mafl.metrics import compute_iteration_metrics
from mafl.metrics.dynamics import adopt_metric, flip_records
from mafl.metrics.failures import answer_entropy, failure_records
from mafl.tasks.base import Problem
from test_metrics_debate import NumberTask, make_transcript

COMMON = dict(iteration=0, split="eval", samples=50, seed=0)


def by_key(records):
    return {(r.metric, r.agent): r.value for r in records}


def test_oracle_and_voted_out():
    debates = [
        # gold 4 among round 1 (as 4.0), and the final vote is right: present, not voted out
        make_transcript("a", "4", [["4.0", "5", "6"], ["4", "4", "5"]]),
        # gold present in round 1 only, the final answer wrong: voted out
        make_transcript("b", "7", [["7", "8", "8"], ["8", "8", "8"]]),
        # never present (an unreadable answer is never right)
        make_transcript("c", "1", [[None, "2", "3"], ["2", "2", None]]),
        # a tie in the last round (9 vs 9.0 is one answer, 2 votes, against 3): right answer wins
        make_transcript("d", "9", [["3", "9", "3"], ["9", "9.0", "3"]]),
    ]
    got = by_key(failure_records(debates, NumberTask(), **COMMON))
    assert got[("oracle/round1", None)] == pytest.approx(3 / 4)
    assert got[("oracle/round2", None)] == pytest.approx(2 / 4)  # a, d
    assert got[("voted_out", None)] == pytest.approx(1 / 4)  # b
    assert got[("voted_out/round1", None)] == got[("voted_out", None)]
    assert got[("voted_out/round2", None)] == 0.0  # when the gold is in the last round, its vote kept it here


def test_a_tie_broken_against_the_gold_answer_is_voted_out():
    task = NumberTask()
    debates = []
    for seed in range(20):  # a 1-1 tie: the seeded choice picks the wrong side on some problems
        t = make_transcript(f"t{seed}", "5", [["5", "6"], ["5", "6"]])
        debates.append(t)
    from mafl.tasks.vote import majority_vote

    for t in debates:  # re-vote each with its own tie seed, as the engine does
        v = majority_vote(task, [u.answer for u in t.rounds[-1]], tie_seed=hash(t.problem.id) % 1000)
        t.final_answer, t.correct = v.winner, task.is_equivalent(v.winner, "5")
    got = by_key(failure_records(debates, task, **COMMON))
    wrong = sum(not t.correct for t in debates) / len(debates)
    assert 0 < wrong < 1 and got[("voted_out", None)] == pytest.approx(wrong)
    assert got[("voted_out/round2", None)] == pytest.approx(wrong) and got[("oracle/round2", None)] == 1.0


def test_conformity_and_persuasion_split_adoption_by_a_wrong_or_a_right_majority():
    debates = [
        # gold 3. agent 0 (5) faces a right majority 3, 3 and takes it up: persuaded
        make_transcript("a", "3", [["5", "3", "3"], ["3", "3", "3"]]),
        # gold 7. agent 2 (7, right) faces a wrong majority 8, 8 and takes it up as 8.0: conforms
        make_transcript("b", "7", [["8", "8", "7"], ["8", "8", "8.0"]]),
        # gold 7. agent 2 faces a wrong majority and keeps its own answer: does not conform
        make_transcript("c", "7", [["8", "8", "7"], ["8", "8", "7"]]),
        # gold 4. agent 1 is unreadable and faces a right 4, 4.0: stays unreadable, not persuaded
        make_transcript("d", "4", [["4", None, "4.0"], ["4", None, "4"]]),
        # gold 1. a 2-1 split of the others for agent 0? others are 2 and 3: no united majority, nobody counted
        make_transcript("e", "1", [["1", "2", "3"], ["2", "2", "3"]]),
    ]
    got = {(r.metric, r.agent): (r.value, r.n) for r in flip_records(debates, NumberTask(), **COMMON)}
    conform, persuade, adopt = adopt_metric(1, "conformity"), adopt_metric(1, "persuasion"), adopt_metric(1)
    assert got[(conform, None)] == (0.5, 2)  # b: 1, c: 0
    assert got[(conform, 2)] == (0.5, 2)
    assert got[(persuade, None)] == (0.5, 2)  # a: 1, d: 0
    assert got[(persuade, 0)] == (1.0, 1) and got[(persuade, 1)] == (0.0, 1)
    assert (conform, 0) not in got and (persuade, 2) not in got  # never facing such a majority
    assert got[(adopt, None)] == (0.5, 4)  # the two together are adopt_majority's agents


def test_answer_entropy_clusters_equivalent_answers_and_isolates_unreadable_ones():
    task = NumberTask()
    assert answer_entropy(task, ["4", "4.0", "4"]) == 0.0  # one answer spelled two ways
    assert answer_entropy(task, ["1", "2", "3", "4"]) == pytest.approx(2.0)
    assert answer_entropy(task, ["4", "4", None, None]) == pytest.approx(1.5)  # {4: 2}, None, None
    assert answer_entropy(task, ["4", "5"]) == pytest.approx(1.0)  # a tie
    p = 2 / 3
    debates = [make_transcript("a", "4", [["4", "4.0", "5"], ["4", "4", "4"]])]
    got = by_key(failure_records(debates, task, **COMMON))
    assert got[("entropy/round1", None)] == pytest.approx(-(p * math.log2(p) + (1 - p) * math.log2(1 - p)))
    assert got[("entropy/round2", None)] == 0.0


def test_tokens_per_problem_split_into_answers_and_summaries():
    def turn(n, r, tokens, summary_tokens=0):
        return Turn(agent=n, round=r, model="m", messages=[], response="x 1", answer="1", correct=True,
                    num_tokens=tokens, summary="s" if summary_tokens else None, summary_tokens=summary_tokens,
                    summary_finished=True if summary_tokens else None)

    debates = [Transcript(problem=Problem("a", "q", "1"), rounds=[[turn(0, 0, 10), turn(1, 0, 20)],
                                                                   [turn(0, 1, 5, 7), turn(1, 1, 5, 3)]],
                          final_answer="1", correct=True),
               Transcript(problem=Problem("b", "q", "1"), rounds=[[turn(0, 0, 2), turn(1, 0, 2)],
                                                                   [turn(0, 1, 2, 1), turn(1, 1, 2, 1)]],
                          final_answer="1", correct=True)]
    got = by_key(compute_iteration_metrics(debates, NumberTask(), metrics_cfg={"diversity": False}, **{
        k: v for k, v in COMMON.items() if k != "samples"}))
    assert got[("tokens/answers", None)] == pytest.approx((40 + 8) / 2)
    assert got[("tokens/summaries", None)] == pytest.approx((10 + 2) / 2)
    assert got[("tokens/total", None)] == pytest.approx((50 + 10) / 2)
    assert {"oracle/round1", "voted_out", "entropy/round2"} <= {m for m, _ in got}
