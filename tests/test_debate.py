"""The debate engine on a scripted backend: prompts, batching, speakers, summaries, topology, resumption."""
from __future__ import annotations

import re

import pytest

from helpers import ScriptedBackend, compose_cfg
from mafl.pipeline import validate
from mafl.debate.engine import run_debate
from mafl.tasks.prompts import Prompts
from mafl.debate.society import Society, readers
from mafl.tasks import get_task
from mafl.tasks.base import Problem

GOLD = "98765"  # no agent ever says it: it must never appear in a prompt


def problems(n: int) -> list[Problem]:
    return [Problem(id=f"p{i}", question=f"What is the result of {i}+1*2+3-4*5?", answer=GOLD) for i in range(n)]


def settings(**overrides):
    overrides = {"summarize": "false", **overrides}
    cfg = compose_cfg([f"debate.{k}={v}" for k, v in overrides.items()])
    return validate(cfg).debate, Prompts.from_cfg(cfg.dataset.prompts)


def agent_answer(request) -> str:
    """Round 1: an answer drawn from the request's seed (each agent has its own); later rounds copy agent 0."""
    user = request.messages[-1]["content"]
    if "Summarize" in user:
        return "Agent 1 says 10."
    if "other agents" in user:
        return "I agree. The answer is 10."
    return f"Step. The answer is {request.sampling.seed % 100003}."


@pytest.fixture()
def task():
    return get_task("arithmetic")


def test_round_one_then_later_rounds_each_one_backend_call(task, tmp_path):
    s, prompts = settings(agents=3, rounds=3)
    backend = ScriptedBackend(agent_answer)
    out = run_debate(backend, task, problems(7), Society(agents=3), s, prompts, seed=0, out_dir=tmp_path, progress=False)
    assert [len(c) for c in backend.calls] == [21, 21, 21]  # every agent and problem of a round in one call
    assert len(out) == 7 and all(len(t.rounds) == 3 and len(t.rounds[0]) == 3 for t in out)
    assert all(t.final_answer == "10" for t in out)
    assert (tmp_path / "transcripts.jsonl").exists()


def test_prompts_hold_the_other_agents_answers_and_never_the_gold_answer(task, tmp_path):
    s, prompts = settings(agents=3, rounds=2)
    responses = {0: "The answer is 11.", 1: "The answer is 22.", 2: "The answer is 33."}
    counter = iter(range(10**6))

    def answer(req):
        if "other agents" in req.messages[-1]["content"]:
            return "The answer is 22."
        return responses[next(counter) % 3]

    backend = ScriptedBackend(answer)
    (t,) = run_debate(backend, task, problems(1), Society(agents=3), s, prompts, seed=0, out_dir=tmp_path,
                      progress=False)
    for n, turn in enumerate(t.rounds[1]):
        text = turn.messages[-1]["content"]
        others = [t.rounds[0][j].response for j in range(3) if j != n]
        assert all(o in text for o in others)
        assert t.rounds[0][n].response not in text  # its own answer is not among "the others"
        assert f"Agent {n + 1}:" not in text
    for rnd in t.rounds:
        for turn in rnd:
            assert GOLD not in "".join(m["content"] for m in turn.messages)
    assert t.final_answer == "22" and t.votes[0] == ("22", 3)


def test_generators_speak_round_one_and_critics_later(task, tmp_path):
    s, prompts = settings(agents=2, rounds=2)
    society = Society(agents=2, weights={"generator_0": "/g0", "critic_1": "/c1"})
    backend = ScriptedBackend(agent_answer)
    (t,) = run_debate(backend, task, problems(1), society, s, prompts, seed=0, out_dir=tmp_path, progress=False)
    assert [u.model for u in t.rounds[0]] == ["generator_0", "generator_1"]
    assert [u.model for u in t.rounds[1]] == ["critic_0", "critic_1"]
    assert [r.adapter for r in backend.calls[0]] == ["generator_0", None]  # untuned models are the base model
    assert [r.adapter for r in backend.calls[1]] == [None, "critic_1"]
    assert prompts.system_critic == t.rounds[1][0].messages[0]["content"]
    no_critics = Society(agents=2, critics=False)
    assert [no_critics.speaker(n, 1) for n in range(2)] == ["generator_0", "generator_1"]


def test_summaries_replace_the_others_answers(task, tmp_path):
    s, prompts = settings(agents=3, rounds=2, summarize="true")
    backend = ScriptedBackend(agent_answer)
    (t,) = run_debate(backend, task, problems(1), Society(agents=3), s, prompts, seed=0, out_dir=tmp_path,
                      progress=False)
    assert len(backend.calls) == 3  # round 1, the summaries, round 2
    turn = t.rounds[1][0]
    assert turn.summary == "Agent 1 says 10."
    assert "Agent 1 says 10." in turn.messages[-1]["content"]
    assert t.rounds[0][1].response not in turn.messages[-1]["content"]


def test_topologies_and_max_others(task, tmp_path):
    assert readers(4, "full") == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]
    assert readers(4, "ring") == [[1, 3], [0, 2], [1, 3], [0, 2]]
    assert readers(3, "custom", [[1], [2], [0]]) == [[1], [2], [0]]
    s, prompts = settings(agents=4, rounds=2, max_others=1)
    backend = ScriptedBackend(lambda r: f"The answer is {len(r.messages[-1]['content']) % 7}.")
    (t,) = run_debate(backend, task, problems(1), Society(agents=4), s, prompts, seed=0, out_dir=tmp_path,
                      progress=False)
    for turn in t.rounds[1]:
        assert len(re.findall(r"Agent \d+:", turn.messages[-1]["content"])) == 1


def test_a_stopped_debate_keeps_its_finished_chunks_and_resumes_identically(task, tmp_path):
    s, prompts = settings(agents=3, rounds=2, chunk_size=3)
    probs = problems(8)
    full = run_debate(ScriptedBackend(agent_answer), task, probs, Society(agents=3), s, prompts, seed=5,
                      out_dir=tmp_path / "a", progress=False)

    class Stop(Exception):
        pass

    def stop_in_second_chunk(k, total):
        if k == 1:
            raise Stop

    with pytest.raises(Stop):
        run_debate(ScriptedBackend(agent_answer), task, probs, Society(agents=3), s, prompts, seed=5,
                   out_dir=tmp_path / "b", progress=False, on_chunk=stop_in_second_chunk)
    assert sorted(p.name for p in (tmp_path / "b" / "chunks").iterdir()) == ["chunk_00000.jsonl", "chunk_00001.jsonl"]
    assert not (tmp_path / "b" / "transcripts.jsonl").exists()
    backend = ScriptedBackend(agent_answer)
    resumed = run_debate(backend, task, probs, Society(agents=3), s, prompts, seed=5, out_dir=tmp_path / "b",
                         progress=False)
    assert sum(len(c) for c in backend.calls) == 2 * 3 * 2  # only the last chunk (2 problems) was debated
    assert [t.to_json() for t in resumed] == [t.to_json() for t in full]
