"""Preference pairs cut from hand-made debate transcripts (the string task of test_finetune_sets): which turns pair
with which, no ground truth, never two agreeing sides, the model's own prompt, dedupe, cap, save/load."""
from __future__ import annotations

import random

import pytest

from mafl.debate.transcript import Transcript
from mafl.finetune.pairs import (
    PEER_CHOSEN,
    PEER_REJECTED,
    SELF,
    PairSet,
    build_pairs,
    build_society_pairs,
    merge_pairs,
    pairs_path,
)
from test_finetune_sets import TASK, transcript


def turn_of(t: Transcript, response: str):
    return next(turn for rnd in t.rounds for turn in rnd if turn.response == response)


def test_each_turn_pairs_with_a_disagreeing_response_on_the_same_problem():
    a = transcript("a", [["1", "2", "1"], ["1", "1", "1"]], "1")
    b = transcript("b", [["5", "6", "7"], ["5", "6", "7"]], None)  # no majority: no pairs
    ts = [a, b]
    pairs = build_society_pairs(ts, TASK, 3)
    # generator_0 agreed in round 1; its own round 2 agrees too, so the rejected side is agent 1's round-1 answer
    (g0,) = pairs["generator_0"].pairs
    assert (g0.kind, g0.prompt, g0.chosen, g0.rejected) == (
        PEER_REJECTED, a.rounds[0][0].messages, a.rounds[0][0].response, a.rounds[0][1].response)
    # generator_1 disagreed: it is the rejected side, chosen is an agreeing round-1 answer of another agent
    (g1,) = pairs["generator_1"].pairs
    assert g1.kind == PEER_CHOSEN and g1.prompt == a.rounds[0][1].messages
    assert g1.rejected == a.rounds[0][1].response and g1.chosen in (a.rounds[0][0].response, a.rounds[0][2].response)
    # critic_1 went wrong -> right: chosen its final answer, rejected its own round-1 answer (the D- signal)
    (c1,) = pairs["critic_1"].pairs
    assert (c1.kind, c1.prompt, c1.chosen, c1.rejected) == (
        SELF, a.rounds[1][1].messages, a.rounds[1][1].response, a.rounds[0][1].response)
    # critic_0 agreed in both rounds and every final answer agrees: nothing to reject
    assert len(pairs["critic_0"]) == 0
    assert all(s.skipped_no_majority == 1 for s in pairs.values())
    rep = pairs["critic_1"].report()
    assert rep["pairs"] == 1 and rep["label_accuracy"] == 1.0 and rep["kinds"] == {SELF: 1}
    assert rep["chosen_accuracy"] == 1.0 and rep["rejected_accuracy"] == 0.0


def random_transcripts(seed: int, n: int = 40, agents: int = 3, rounds: int = 3, gold: str = "1"):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        answers = [[rng.choice(["1", "2", "3", None]) for _ in range(agents)] for _ in range(rounds)]
        last = [x for x in answers[-1] if x is not None]
        top = max(set(last), key=last.count) if last else None
        final = top if top is not None and last.count(top) * 2 > agents else None
        out.append(transcript(str(i), answers, final, gold=gold))
    return out


@pytest.mark.parametrize("critics", [True, False])
def test_no_pair_has_agreeing_sides_or_a_chosen_side_without_answer(critics):
    ts = random_transcripts(0)
    pairs = build_society_pairs(ts, TASK, 3, critics=critics)
    by_id = {t.problem.id: t for t in ts}
    assert sum(len(s) for s in pairs.values()) > 40
    for name, s in pairs.items():
        role, agent = name.split("_")
        for p in s.pairs:
            t = by_id[p.problem_id]
            chosen, rejected = turn_of(t, p.chosen), turn_of(t, p.rejected)
            assert chosen.answer is not None and chosen.answer == t.final_answer  # the label, never the gold
            assert rejected.answer != chosen.answer
            # the prompt is the model's own turn: its agent, in the rounds the model speaks
            own = turn_of(t, p.chosen if p.kind != PEER_CHOSEN else p.rejected)
            assert own.messages == p.prompt and own.agent == int(agent)
            if critics:
                assert own.round == (0 if role == "generator" else len(t.rounds) - 1)
    kinds = {p.kind for s in pairs.values() for p in s.pairs}
    assert kinds == {SELF, PEER_REJECTED, PEER_CHOSEN}


def test_the_gold_answer_never_changes_the_pairs():
    right = build_society_pairs(random_transcripts(1, gold="1"), TASK, 3, seed=5)
    other = build_society_pairs(random_transcripts(1, gold="2"), TASK, 3, seed=5)
    for name in right:
        assert [p.key for p in right[name].pairs] == [p.key for p in other[name].pairs]
    # the gold answer only moves the analysis numbers
    assert any(right[n].report()["label_accuracy"] != other[n].report()["label_accuracy"] for n in right)


def test_a_cut_off_turn_is_rejected_never_chosen():
    t = transcript("a", [["1", None, "1"], ["1", "1", "1"]], "1")
    g1 = build_pairs([t], 1, TASK, "first")
    (p,) = g1.pairs
    assert p.rejected == t.rounds[0][1].response and p.kind == PEER_CHOSEN
    # agent 0's only disagreeing peer is the cut-off answer: a valid rejected side
    (q,) = build_pairs([t], 0, TASK, "first").pairs
    assert q.rejected == t.rounds[0][1].response


def test_choices_are_seeded_per_model_and_the_cap_drops_by_seed():
    ts = random_transcripts(2, n=80)
    a = build_pairs(ts, 0, TASK, "first", seed=3)
    assert [p.key for p in a.pairs] == [p.key for p in build_pairs(ts, 0, TASK, "first", seed=3).pairs]
    assert [p.key for p in a.pairs] != [p.key for p in build_pairs(ts, 0, TASK, "first", seed=4).pairs]
    capped = build_pairs(ts, 0, TASK, "first", seed=3, max_pairs=5)
    assert len(capped) == 5 and capped.dropped_by_cap == len(a) - 5
    assert {p.key for p in capped.pairs} <= {p.key for p in a.pairs}


def test_a_shared_model_merges_every_agents_pairs_without_duplicates():
    # one round, the same prompt for every agent (majority_dpo): agent 0's "chosen over agent 1" and agent 1's
    # "rejected for agent 0" are the same pair
    t = transcript("a", [["1", "2", "1"]], "1")
    for rnd in t.rounds:
        for turn in rnd:
            turn.messages = [{"role": "user", "content": "the same question"}]
    parts = build_society_pairs([t], TASK, 3, critics=False)
    merged = merge_pairs(parts.values(), name="model")
    assert len({p.key for s in parts.values() for p in s.pairs}) == len(merged) == 2
    assert merged.duplicates_removed == sum(len(s) for s in parts.values()) - 2


def test_pairs_save_and_load(tmp_path):
    s = build_society_pairs(random_transcripts(3), TASK, 3)["critic_2"]
    path = s.save(pairs_path(tmp_path, "critic_2"))
    assert path.name == "critic_2.pairs.jsonl" and (tmp_path / "critic_2.pairs.report.json").exists()
    back = PairSet.load(path)
    assert back.name == "critic_2" and back.pairs == [type(p).from_json(p.to_json()) for p in s.pairs]
    assert back.report() == s.report()


def test_the_sets_line_shows_each_models_pairs():
    from mafl.finetune.sets import FinetuneSet
    from mafl.summary import sets_line

    ts = [transcript("a", [["1", "2", "1"], ["1", "1", "1"]], "1")]
    pairs = build_society_pairs(ts, TASK, 3)
    reports = {n: FinetuneSet(n, pairs=pairs[n]).report() for n in ("generator_1", "critic_0")}
    assert sets_line(1, reports) == ("iteration 1 sets: generator_1 0 + 1 pairs (100% right>wrong), "
                                     "critic_0 0 + 0 pairs | 0 problems without a majority")
    assert "pairs" not in sets_line(1, {"critic_0": FinetuneSet("critic_0").report()})
