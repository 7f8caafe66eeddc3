"""Fine-tuning sets cut from hand-made debate transcripts (a fake task with string equality)."""
from __future__ import annotations

import json

import pytest

from mafl.debate.transcript import Transcript, Turn
from mafl.finetune.labels import report_path
from mafl.finetune.sets import (
    D_MINUS,
    D_PLUS,
    FinetuneSet,
    build_critic_set,
    build_generator_set,
    build_society_sets,
    critic_mix_sizes,
    merge_sets,
)
from mafl.tasks.base import Problem, Task


class StringTask(Task):
    name = "string"

    def extract_answer(self, response):
        return response.rsplit(" ", 1)[-1] if response else None

    def is_equivalent(self, pred, gold):
        return pred is not None and gold is not None and pred.strip() == gold.strip()

    def gold_answer(self, row):
        return str(row["answer"])


TASK = StringTask()


def transcript(pid: str, answers: list[list[str | None]], final: str | None, gold: str = "1",
               prompt_tag: str = "") -> Transcript:
    """answers[r][n]: agent n's answer in round r; responses and prompts are unique per (problem, round, agent)."""
    rounds = []
    for r, row in enumerate(answers):
        turns = []
        for n, a in enumerate(row):
            role = "generator" if r == 0 else "critic"
            msgs = [{"role": "user", "content": f"{pid}{prompt_tag} round {r} agent {n}"}]
            turns.append(Turn(agent=n, round=r, model=f"{role}_{n}", messages=msgs,
                              response=f"reasoning {pid} {r} {n} answer {a}", answer=a, correct=a == gold))
        rounds.append(turns)
    last = [a for a in answers[-1] if a is not None]
    votes = [(final, last.count(final))] if final is not None else []
    votes += sorted(((a, last.count(a)) for a in dict.fromkeys(last) if a != final), key=lambda v: -v[1])
    return Transcript(problem=Problem(id=pid, question=f"q{pid}", answer=gold), rounds=rounds, final_answer=final,
                      votes=votes)


def test_generator_set_takes_only_majority_agreeing_round1_turns():
    ts = [
        transcript("a", [["1", "2", "1"], ["1", "1", "1"]], "1"),
        transcript("b", [["3", "3", None], ["3", "3", "3"]], "3", gold="4"),
        transcript("c", [["5", "6", "7"], ["5", "6", "7"]], None),  # no majority: nothing
    ]
    g0 = build_generator_set(ts, 0, TASK)
    assert [e.problem_id for e in g0.examples] == ["a", "b"]
    assert [e.response for e in g0.examples] == ["reasoning a 0 0 answer 1", "reasoning b 0 0 answer 3"]
    assert g0.examples[0].prompt == ts[0].rounds[0][0].messages  # the prompt exactly as given
    assert [e.correct for e in g0.examples] == [True, False]  # carried for analysis, never used to select
    g1 = build_generator_set(ts, 1, TASK)
    assert [e.problem_id for e in g1.examples] == ["b"]  # agent 1 disagreed on "a" in round 1
    g2 = build_generator_set(ts, 2, TASK)
    assert [e.problem_id for e in g2.examples] == ["a"]  # a None answer never agrees
    rep = g0.report()
    assert rep["size"] == 2 and rep["accuracy"] == 0.5
    assert rep["mean_response_chars"] == pytest.approx(sum(len(e.response) for e in g0.examples) / 2)
    assert rep["mean_response_tokens"] == 6.0  # "reasoning a 0 0 answer 1" and "d_minus" not in rep


def test_none_majority_gives_nothing():
    ts = [transcript(str(i), [["1", "2"], ["1", "2"]], None) for i in range(4)]
    sets = build_society_sets(ts, TASK, num_agents=2, critic_w=None, seed=0)
    assert set(sets) == {"generator_0", "generator_1", "critic_0", "critic_1"}
    assert all(len(s) == 0 for s in sets.values())
    assert sets["generator_0"].report()["accuracy"] is None


def test_critic_split_into_d_minus_and_d_plus():
    ts = [
        transcript("a", [["2", "1"], ["1", "1"]], "1"),  # agent 0: wrong-to-right (D-); agent 1: D+
        transcript("b", [["1", "1"], ["1", "1"]], "1"),  # both D+
        transcript("c", [["1", "2"], ["1", "2"]], "1"),  # agent 1 disagrees in the last round: nothing
        transcript("d", [["1", "2"], ["1", "1"]], "1"),  # agent 1: D-
    ]
    c0 = build_critic_set(ts, 0, TASK, critic_w=0.5, seed=0)
    assert {(e.problem_id, e.kind) for e in c0.examples} == {("a", D_MINUS), ("b", D_PLUS)}
    assert c0.examples[0].prompt == ts[0].rounds[-1][0].messages  # the final-round prompt
    c1 = build_critic_set(ts, 1, TASK, critic_w=0.5, seed=0)
    assert {(e.problem_id, e.kind) for e in c1.examples} == {("d", D_MINUS), ("a", D_PLUS)}
    assert c1.report()["d_minus"] == 1 and c1.report()["d_plus"] == 1
    # a one-round debate has no critic turns
    assert len(build_critic_set([transcript("e", [["1", "1"]], "1")], 0, TASK, None, 0)) == 0


@pytest.mark.parametrize(
    "a,b,w,expected",
    [
        (10, 30, 0.5, (10, 10)),  # D- scarcer: all D-, D+ cut to match
        (10, 30, 0.25, (10, 30)),  # exactly w
        (30, 10, 0.5, (10, 10)),  # D+ scarcer: all D+, D- cut
        (10, 30, 0.8, (10, 2)),  # 10 / 12 = 0.83 (rounded)
        (10, 30, 1.0, (10, 0)),
        (10, 30, 0.0, (0, 30)),
        (0, 30, 0.5, (0, 0)),
    ],
)
def test_critic_mix_sizes(a, b, w, expected):
    assert critic_mix_sizes(a, b, w) == expected


def test_critic_mix_sizes_rejects_bad_w():
    with pytest.raises(ValueError):
        critic_mix_sizes(3, 3, 1.5)


def _critic_transcripts(num_minus: int, num_plus: int) -> list[Transcript]:
    ts = [transcript(f"m{i}", [["2"], ["1"]], "1") for i in range(num_minus)]
    ts += [transcript(f"p{i}", [["1"], ["1"]], "1") for i in range(num_plus)]
    return ts


@pytest.mark.parametrize("w,n_minus,n_plus", [(0.5, 6, 6), (0.75, 6, 2), (0.2, 3, 12)])
def test_critic_w_mixing(w, n_minus, n_plus):
    ts = _critic_transcripts(6, 12)
    c = build_critic_set(ts, 0, TASK, critic_w=w, seed=0)
    rep = c.report()
    assert (rep["d_minus"], rep["d_plus"]) == (n_minus, n_plus)
    # chosen examples keep transcript order
    order = [e.problem_id for e in c.examples]
    assert order == [t.problem.id for t in ts if t.problem.id in set(order)]


@pytest.mark.parametrize("num_minus, num_plus", [(200, 400), (40, 3), (5, 0)])
def test_critic_w_null_is_the_public_coin_flip_rule(num_minus, num_plus):
    """The public code (ft_critic.py) keeps every D- example, and for the i-th one adds the i-th of the shuffled D+
    examples when a fair coin says so; where it would index past its D+ list (its IndexError), nothing is added."""
    ts = _critic_transcripts(num_minus, num_plus)
    counts = []
    for seed in range(30):
        rep = build_critic_set(ts, 0, TASK, critic_w=None, seed=seed).report()
        assert rep["d_minus"] == num_minus
        assert rep["d_plus"] <= min(num_plus, num_minus)
        counts.append(rep["d_plus"])
    if num_plus >= num_minus:  # about half as many D+ as D-: Binomial(200, 1/2) has sd ~7, the mean of 30 ~1.3
        assert abs(sum(counts) / len(counts) - num_minus / 2) < 5
        assert len(set(counts)) > 1  # drawn per example, not a fixed share
    elif num_plus:  # a coin per index: only the first num_plus indices can add one
        assert max(counts) <= num_plus and sum(counts) > 0


def test_mixing_is_deterministic_by_seed():
    ts = _critic_transcripts(6, 40)
    pick = lambda seed: [e.problem_id for e in build_critic_set(ts, 0, TASK, None, seed).examples]  # noqa: E731
    assert pick(1) == pick(1)
    assert any(pick(1) != pick(s) for s in range(2, 6))


def test_duplicates_removed_and_counted():
    t = transcript("a", [["1", "1"], ["1", "1"]], "1")
    ts = [t, t, transcript("b", [["1", "1"], ["1", "1"]], "1")]
    g = build_generator_set(ts, 0, TASK)
    assert len(g) == 2 and g.duplicates_removed == 1 and g.report()["duplicates_removed"] == 1
    # same response, different prompt: not a duplicate
    t2 = transcript("a", [["1", "1"], ["1", "1"]], "1", prompt_tag="!")
    assert len(build_generator_set([t, t2], 0, TASK)) == 2


def test_max_examples_cap():
    ts = [transcript(str(i), [["1"], ["1"]], "1") for i in range(20)]
    g = build_generator_set(ts, 0, TASK, max_examples=7, seed=3)
    assert len(g) == 7 and g.dropped_by_cap == 13
    assert [e.problem_id for e in g.examples] == [e.problem_id for e in build_generator_set(
        ts, 0, TASK, max_examples=7, seed=3).examples]


def test_without_critics_generator_gets_every_round():
    ts = [transcript("a", [["1", "2"], ["1", "1"], ["1", "1"]], "1")]
    sets = build_society_sets(ts, TASK, num_agents=2, critic_w=None, seed=0, critics=False)
    assert set(sets) == {"generator_0", "generator_1"}
    assert [e.response for e in sets["generator_0"].examples] == [
        "reasoning a 0 0 answer 1", "reasoning a 1 0 answer 1", "reasoning a 2 0 answer 1"]
    assert len(sets["generator_1"]) == 2  # its round-1 answer disagreed


def test_society_sets_with_critics():
    ts = [transcript("a", [["2", "1", "1"], ["1", "1", "1"]], "1")]
    sets = build_society_sets(ts, TASK, num_agents=3, critic_w=None, seed=0)
    assert [len(sets[f"generator_{n}"]) for n in range(3)] == [0, 1, 1]
    assert [len(sets[f"critic_{n}"]) for n in range(3)] == [1, 0, 0]  # one D-, 1 // 2 = 0 D+
    assert sets["critic_0"].examples[0].kind == D_MINUS


def test_merge_sets_for_the_single_model():
    ts = [transcript("a", [["1", "1"], ["1", "1"]], "1"), transcript("b", [["2", "1"], ["1", "1"]], "1")]
    sets = build_society_sets(ts, TASK, num_agents=2, critic_w=0.5, seed=0)
    merged = merge_sets(sets.values())
    assert merged.name == "single"
    assert len(merged) == sum(len(s) for s in sets.values())
    doubled = merge_sets([sets["generator_0"], sets["generator_0"]])
    assert len(doubled) == len(sets["generator_0"]) and doubled.duplicates_removed == len(sets["generator_0"])


def test_save_load_round_trip(tmp_path):
    ts = [transcript("a", [["2", "1"], ["1", "1"]], "1"), transcript("a", [["2", "1"], ["1", "1"]], "1"),
          transcript("b", [["1", "1"], ["1", "1"]], "1")]
    c = build_critic_set(ts, 0, TASK, critic_w=0.5, seed=0)
    path = c.save(tmp_path / "sets" / "critic_0.jsonl")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == len(c) == 2
    assert set(lines[0]) >= {"prompt", "completion", "problem_id", "correct"}
    assert lines[0]["completion"] == [{"role": "assistant", "content": c.examples[0].response}]
    assert lines[0]["prompt"] == ts[0].rounds[-1][0].messages
    back = FinetuneSet.load(path)
    assert back.examples == c.examples and back.name == "critic_0"
    assert back.report() == c.report() and back.duplicates_removed == 1
    assert json.loads(report_path(path).read_text())["d_minus"] == 1
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp files left
    assert back.records()[0] == {"prompt": lines[0]["prompt"], "completion": lines[0]["completion"]}


def test_real_task_equivalence_is_used():
    tasks = pytest.importorskip("mafl.tasks")
    task = tasks.get_task("arithmetic")
    assert task.is_equivalent("12.0", "12") and not task.is_equivalent("13", "12")
    ts = [transcript("a", [["12.0", "13"], ["12", "12"]], "12", gold="12")]
    sets = build_society_sets(ts, task, num_agents=2, critic_w=None, seed=0)
    assert len(sets["generator_0"]) == 1 and len(sets["generator_1"]) == 0  # "12.0" agrees with the majority "12"
    assert sets["critic_1"].report()["d_minus"] == 1
