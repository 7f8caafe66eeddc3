"""The flip matrix of each round transition, on hand-made debates."""
from __future__ import annotations

import pytest

from mafl.metrics.dynamics import CELLS, flip_metric, flip_records
from test_metrics_debate import make_transcript


def records_by_key(transcripts):
    return {(r.metric, r.agent): r.value
            for r in flip_records(transcripts, iteration=0, split="eval", samples=50, seed=0)}


def test_flip_cells_per_agent_and_for_the_society():
    debates = [
        # agent 0 wrong -> right, agent 1 right -> right, agent 2 right -> wrong
        make_transcript("a", "3", [["5", "3", "3"], ["3", "3", "4"]]),
        # agent 0 wrong -> wrong (no answer read, then a wrong one), agent 1 wrong -> right, agent 2 right -> right
        make_transcript("b", "7", [[None, "8", "7"], ["9", "7", "7"]]),
    ]
    got = records_by_key(debates)
    m = lambda cell: flip_metric(1, cell)  # noqa: E731
    assert got[(m("wrong_right"), 0)] == 0.5 and got[(m("wrong_wrong"), 0)] == 0.5
    assert got[(m("right_right"), 1)] == 0.5 and got[(m("wrong_right"), 1)] == 0.5
    assert got[(m("right_wrong"), 2)] == 0.5 and got[(m("right_right"), 2)] == 0.5
    # the society: the mean over problems of the share of agents in each cell
    assert got[(m("wrong_right"), None)] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert got[(m("right_wrong"), None)] == pytest.approx((1 / 3 + 0) / 2)
    assert sum(got[(m(c), None)] for c in CELLS) == pytest.approx(1.0)
    for n in range(3):
        assert sum(got[(m(c), n)] for c in CELLS) == pytest.approx(1.0)


def test_every_transition_of_a_longer_debate_and_none_for_one_round():
    three_rounds = [make_transcript("a", "1", [["1", "2", "2"], ["2", "1", "1"], ["1", "1", "1"]])]
    got = records_by_key(three_rounds)
    assert got[(flip_metric(1, "right_wrong"), 0)] == 1.0 and got[(flip_metric(2, "wrong_right"), 0)] == 1.0
    assert got[(flip_metric(1, "wrong_right"), None)] == pytest.approx(2 / 3)
    assert got[(flip_metric(2, "right_right"), None)] == pytest.approx(2 / 3)
    assert records_by_key([make_transcript("b", "1", [["1", "2", "1"]])]) == {}


def test_the_report_shows_the_dynamics_table():
    from mafl.metrics.results import Results
    from mafl.reporting.report import build_report

    recs = flip_records([make_transcript("a", "3", [["5", "3", "3"], ["3", "3", "4"]])], iteration=0,
                        split="eval", samples=50, seed=0)
    cfg = {"method": {"name": "debate"}, "dataset": {"name": "arithmetic"}, "model": {"name": "tiny"}, "seed": 0}
    text = build_report([Results.from_config(cfg, recs)])
    assert "## debate dynamics (share of agents) on eval by iteration: arithmetic" in text
    header = next(line for line in text.splitlines() if "flips/round1-2/wrong_right (%)" in line)
    assert "flips/round1-2/right_wrong (%)" in header
    # right->right, wrong->right, right->wrong 1/3 each (one problem: no stderr), wrong->wrong none
    assert "| tiny | debate | 0 | 33.3 (n=1) | 33.3 (n=1) | 33.3 (n=1) | 0.0 (n=1) |" in text


def test_moves_say_whether_a_new_answer_was_kept_adopted_or_new():
    from test_metrics_debate import NumberTask

    debates = [
        # agent 0 adopts agent 1's 3, agent 1 keeps 3, agent 2 says 4 (nobody's): new
        make_transcript("a", "3", [["5", "3", "3"], ["3", "3", "4"]]),
        # agent 0 keeps 9.0 (= 9), agent 1 adopts agent 2's 7, agent 2 gives no answer: new
        make_transcript("b", "7", [["9", "8", "7"], ["9.0", "7", None]]),
    ]
    got = {(r.metric, r.agent): r.value for r in flip_records(debates, NumberTask(), iteration=0, split="eval",
                                                               samples=50, seed=0)}
    m = lambda move: f"moves/round1-2/{move}"  # noqa: E731
    assert (got[(m("adopted"), 0)], got[(m("kept"), 0)]) == (0.5, 0.5)
    assert (got[(m("kept"), 1)], got[(m("adopted"), 1)]) == (0.5, 0.5)
    assert got[(m("new"), 2)] == 1.0
    assert got[(m("adopted"), None)] == pytest.approx(1 / 3) and got[(m("new"), None)] == pytest.approx(1 / 3)
    assert not any(k[0].startswith("moves") for k in records_by_key(debates))  # without a task: flips only


def test_adopting_the_others_majority_counts_only_agents_facing_one():
    from mafl.metrics.dynamics import adopt_metric
    from test_metrics_debate import NumberTask

    debates = [
        # agent 0 (5) faces 3,3 and takes it up; agents 1 and 2 hold the others' answer? no: their others are
        # {5, 3}, no strict majority -> not counted
        make_transcript("a", "3", [["5", "3", "3"], ["3", "3", "4"]]),
        # agent 2 (7) faces 8,8 and keeps 7; agent 0 and 1 (8) face {8, 7}: no strict majority
        make_transcript("b", "7", [["8", "8", "7"], ["8", "8", "7"]]),
        # everyone agrees: nobody faces a differing majority
        make_transcript("c", "1", [["1", "1", "1"], ["1", "1", "2"]]),
        # agent 1 gave no answer (None) and faces 4,4: it takes 4.0 (equivalent) up
        make_transcript("d", "4", [["4", None, "4"], ["4", "4.0", "4"]]),
    ]
    got = {(r.metric, r.agent): (r.value, r.n) for r in flip_records(debates, NumberTask(), iteration=0,
                                                                      split="eval", samples=50, seed=0)}
    m = adopt_metric(1)
    assert got[(m, 0)] == (1.0, 1)  # problem a only
    assert got[(m, 1)] == (1.0, 1)  # problem d only
    assert got[(m, 2)] == (0.0, 1)  # problem b only
    # the society: per problem the share of facing agents that moved (a: 1, b: 0, d: 1), problem c has none
    assert got[(m, None)] == (pytest.approx(2 / 3), 3)


def test_consensus_of_every_round():
    from mafl.metrics.dynamics import consensus_metric
    from test_metrics_debate import NumberTask

    debates = [make_transcript("a", "1", [["1", "2", "2"], ["2", "2", "1"], ["1", "1", "1"]]),
               make_transcript("b", "5", [["5", "5", "5"], ["5", "6", "7"], ["5", "5", "6"]])]
    got = {(r.metric, r.agent): r.value for r in flip_records(debates, NumberTask(), iteration=0, split="eval",
                                                               samples=50, seed=0)}
    # round 2: a 2/3 agree with 2; b: 5,6,7 has no majority -> the tie is broken by a seeded choice: 1/3 either way
    assert got[(consensus_metric(2), None)] == pytest.approx((2 / 3 + 1 / 3) / 2)
    # round 3 (the last): against the final answer, as `consensus`
    assert got[(consensus_metric(3), None)] == pytest.approx((1 + 2 / 3) / 2)
    assert (consensus_metric(1), None) not in got  # round 1's is consensus/round1 of the diversity metrics


def test_the_report_shows_each_agents_flip_matrix():
    from mafl.metrics.results import Results
    from mafl.reporting.report import build_report
    from test_metrics_debate import NumberTask

    recs = flip_records([make_transcript("a", "3", [["5", "3", "3"], ["3", "3", "4"]]),
                         make_transcript("b", "7", [["9", "7", "7"], ["9", "7", "7"]])], NumberTask(),
                        iteration=0, split="eval", samples=50, seed=0)
    cfg = {"method": {"name": "debate"}, "dataset": {"name": "arithmetic"}, "model": {"name": "tiny"}, "seed": 0}
    text = build_report([Results.from_config(cfg, recs)])
    assert "## debate dynamics per agent on eval by iteration: arithmetic" in text
    assert "| rounds | agent | right→right (%) | wrong→right (%) | right→wrong (%) | wrong→wrong (%) |" in text
    # agent 0: wrong->right on a, wrong->wrong on b; adopted 3 on a, kept 9 on b; took up the others' majority on
    # a (3, 3) and not on b (7, 7)
    assert ("| tiny | debate | 0 | 1-2 | 0 | 0.0 ± 0.0 (n=1) | 50.0 ± 50.0 (n=1) | 0.0 ± 0.0 (n=1) | "
            "50.0 ± 50.0 (n=1) | 50.0 ± 50.0 (n=1) | 50.0 ± 50.0 (n=1) | 0.0 ± 0.0 (n=1) | 50.0 ± 50.0 (n=1) |") in text
    # agent 2: right->wrong on a (3 -> 4: new), right->right on b; never faced a differing majority
    row2 = next(line for line in text.splitlines() if line.startswith("| tiny | debate | 0 | 1-2 | 2 |"))
    assert row2.endswith("| – |")
