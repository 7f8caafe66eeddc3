"""The paper's method, point by point (issue: "The paper's method, exactly"): later rounds continue each agent's
own conversation, summaries by the base model, votes and sets that favour no agent, cut-off answers, problems
fixed across seeds, and the options that reproduce the public code's rules. Scripted backends, real prompts."""
from __future__ import annotations

import pytest

from helpers import ScriptedBackend, compose_cfg
from mafl.backends.base import Completion
from mafl.debate.settings import DebateSettings
from mafl.debate.engine import run_debate
from mafl.errors import ConfigError
from mafl.tasks.prompts import Prompts
from mafl.debate.society import Society
from mafl.finetune.sets import build_society_sets
from mafl.metrics.cutoff import cutoff_records
from mafl.tasks import get_task, load_splits
from mafl.tasks.base import Problem

DATASETS = ["arithmetic", "gsm8k", "math", "math500", "jsonl"]


def debate_setup(dataset: str = "arithmetic", **debate):
    cfg = compose_cfg([f"dataset={dataset}", *(f"debate.{k}={v}" for k, v in debate.items())])
    return DebateSettings.from_cfg(cfg.debate), Prompts.from_cfg(cfg.dataset.prompts), get_task(cfg.dataset.task)


def problems(n: int) -> list[Problem]:
    return [Problem(id=f"p{i}", question=f"What is {i} plus 98765?", answer="1") for i in range(n)]


def by_seed(request) -> str:
    """Every turn a distinct response (its seed and prompt length), answering with the agent's own number."""
    return f"Work {request.sampling.seed} {len(str(request.messages))}. The answer is \\boxed{{{request.sampling.seed % 7}}}."


@pytest.mark.parametrize("dataset", DATASETS)
def test_round_two_continues_the_agents_own_conversation(dataset, tmp_path):
    s, prompts, task = debate_setup(dataset, agents=3, rounds=2, summarize="false")
    assert s.context == "conversation"  # the default
    (t,) = run_debate(ScriptedBackend(by_seed), task, problems(1), Society(agents=3), s, prompts, seed=1,
                      out_dir=tmp_path, progress=False)
    for n, turn in enumerate(t.rounds[1]):
        own = t.rounds[0][n]
        roles = [m["role"] for m in turn.messages]
        assert roles == ["system", "user", "assistant", "user"]
        assert turn.messages[0]["content"] == prompts.system_critic
        assert turn.messages[1] == own.messages[-1]  # its round-1 question, as it was asked
        assert turn.messages[2] == {"role": "assistant", "content": own.response}
        others = [t.rounds[0][j].response for j in range(3) if j != n]
        assert all(o in turn.messages[3]["content"] for o in others)
        assert own.response not in turn.messages[3]["content"]
    # the critic's example is exactly that context, the target its final response; the generator's is round 1
    agree = ScriptedBackend(lambda r: f"{len(str(r.messages))} The answer is \\boxed{{4}}.")
    (t2,) = run_debate(agree, task, problems(1), Society(agents=3), s, prompts, seed=1, out_dir=tmp_path / "agree",
                       progress=False)
    # every agent agreed in round 1 already: D+ only, which critic_w=1.0 (D- only) leaves out
    assert all(len(x) == 0 for name, x in build_society_sets([t2], task, 3, critic_w=1.0).items()
               if name.startswith("critic"))
    sets = build_society_sets([t2], task, 3, critic_w=0.0)
    for n in range(3):
        (critic,) = sets[f"critic_{n}"].examples
        assert list(critic.prompt) == t2.rounds[1][n].messages and critic.response == t2.rounds[1][n].response
        (gen,) = sets[f"generator_{n}"].examples
        assert list(gen.prompt) == t2.rounds[0][n].messages and [m["role"] for m in gen.prompt] == ["system", "user"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_no_template_asks_an_agent_to_examine_a_solution_it_is_not_shown(dataset):
    _, prompts, _ = debate_setup(dataset)
    assert "your solution" not in prompts.debate_others.lower()  # context=others: its own answer is not shown


def test_context_others_is_a_fresh_prompt_without_the_agents_own_answer(tmp_path):
    s, prompts, task = debate_setup(agents=3, rounds=3, context="others", summarize="false")
    (t,) = run_debate(ScriptedBackend(by_seed), task, problems(1), Society(agents=3), s, prompts, seed=1,
                      out_dir=tmp_path, progress=False)
    for r in (1, 2):
        for n, turn in enumerate(t.rounds[r]):
            assert [m["role"] for m in turn.messages] == ["system", "user"]
            assert t.rounds[r - 1][n].response not in turn.messages[1]["content"]


def test_a_third_round_holds_both_earlier_answers(tmp_path):
    s, prompts, task = debate_setup(agents=2, rounds=3, summarize="false")
    (t,) = run_debate(ScriptedBackend(by_seed), task, problems(1), Society(agents=2), s, prompts, seed=1,
                      out_dir=tmp_path, progress=False)
    msgs = t.rounds[2][1].messages
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [msgs[2]["content"], msgs[4]["content"]] == [t.rounds[0][1].response, t.rounds[1][1].response]


@pytest.mark.parametrize("summarizer, adapters", [("base", [None, None]), ("self", ["critic_0", "critic_1"])])
def test_summaries_are_written_by_the_base_model_or_by_the_speaker(summarizer, adapters, tmp_path):
    s, prompts, task = debate_setup(agents=2, rounds=2, summarize="true", summarizer=summarizer)
    society = Society(agents=2, weights={"critic_0": "/c0", "critic_1": "/c1", "generator_0": "/g0"})
    backend = ScriptedBackend(lambda r: "Agent 2 says 5." if "Summarize" in r.messages[-1]["content"] else by_seed(r))
    (t,) = run_debate(backend, task, problems(1), society, s, prompts, seed=1, out_dir=tmp_path, progress=False)
    summary_call = backend.calls[1]
    assert [r.adapter for r in summary_call] == adapters
    for n, req in enumerate(summary_call):
        assert [m["role"] for m in req.messages] == ["user"]  # a single user turn, as in the paper's code
        assert t.rounds[0][1 - n].response in req.messages[0]["content"]
        assert t.rounds[0][n].response not in req.messages[0]["content"]
    turn = t.rounds[1][0]
    assert turn.summary == "Agent 2 says 5." and turn.summary_finished is True
    assert "Agent 2 says 5." in turn.messages[-1]["content"]
    assert turn.messages[2] == {"role": "assistant", "content": t.rounds[0][0].response}


def test_tie_answers_favour_no_agent(tmp_path):
    """Every problem is a 1-1-1 split; the reported answer is each agent's about a third of the time."""
    s, prompts, task = debate_setup(agents=3, rounds=1, chunk_size=100)
    agent_of = {}

    def distinct(req):
        n = len(agent_of) % 3
        agent_of[id(req)] = n
        return f"The answer is {n + 10}."

    ts = run_debate(ScriptedBackend(distinct), task, problems(600), Society(agents=3), s, prompts, seed=3,
                    out_dir=tmp_path, progress=False)
    assert all(t.votes == sorted(t.votes, key=lambda v: -v[1]) and len(t.votes) == 3 for t in ts)
    wins = [sum(t.final_answer == str(10 + n) for t in ts) for n in range(3)]
    chi2 = sum((w - 200) ** 2 / 200 for w in wins)
    assert chi2 < 13.8, wins  # uniform at p = 0.001; agent 0 winning every tie gives wins = [600, 0, 0]
    # and a 1-1-1 split gives no fine-tuning example to anyone (a strict majority is needed)
    sets = build_society_sets(ts, task, 3, critic_w=None)
    assert all(len(x) == 0 and x.skipped_no_majority == 600 for x in sets.values())


def test_cut_off_answers_never_vote_or_train(tmp_path):
    s, prompts, task = debate_setup(agents=3, rounds=2, summarize="false")

    def answer(req):
        critic_turn = any(m["role"] == "assistant" for m in req.messages)
        seed_agent = req.sampling.seed % 3
        text = "The answer is 7."
        # problem p1: two of the three critics are cut off (one is left: no majority); p0: one is cut off
        if critic_turn and ("p1-marker" in str(req.messages) and seed_agent != 0 or
                            "p0-marker" in str(req.messages) and seed_agent == 0):
            return Completion(text=text, num_tokens=160, finished=False)
        return text

    probs = [Problem(id="p0", question="p0-marker 3+4?", answer="7"),
             Problem(id="p1", question="p1-marker 3+4?", answer="7")]
    seeds = set()
    backend = ScriptedBackend(lambda r: seeds.add(r.sampling.seed) or answer(r))
    ts = run_debate(backend, task, probs, Society(agents=3), s, prompts, seed=0, out_dir=tmp_path, progress=False)
    cut = {t.problem.id: [not u.finished for u in t.rounds[1]] for t in ts}
    assert all(u.answer is None and not u.correct for t in ts for u in t.rounds[1] if not u.finished)
    for t in ts:
        assert sum(v for _, v in t.votes) == sum(not c for c in cut[t.problem.id])  # cut-off answers never vote
    sets = build_society_sets(ts, task, 3, critic_w=0.0)
    for n in range(3):
        ids = [e.problem_id for e in sets[f"critic_{n}"].examples]
        for t in ts:
            label_held = sum(not c for c in cut[t.problem.id]) >= 2
            assert (t.problem.id in ids) == (label_held and not cut[t.problem.id][n])
    records = {r.metric: r.value for r in cutoff_records(ts, iteration=0, split="eval", samples=10, seed=0)}
    assert records["cutoff/round1"] == 0.0
    expected = sum(sum(c) / 3 for c in cut.values()) / 2
    assert records["cutoff/round2"] == pytest.approx(expected) and expected > 0
    assert records["answers_per_problem"] == 6.0


def test_min_agreement_null_is_the_public_consensus_rule(tmp_path):
    """The public code labels a 1-1-1 split with the largest answer string; mafl's default labels nothing."""
    s, prompts, task = debate_setup(agents=3, rounds=2, summarize="false")
    per_agent = {0: "3", 1: "9", 2: "12"}  # "9" is the largest string

    position = iter(range(10**6))  # requests come in (problem, agent) order: position % 3 is the agent

    def answer(req):
        return f"The answer is {per_agent[next(position) % 3]}."

    ts = run_debate(ScriptedBackend(answer), task, problems(30), Society(agents=3), s, prompts, seed=0,
                    out_dir=tmp_path, progress=False)
    splits = [t for t in ts if len(t.votes) == 3]
    assert len(splits) == 30
    public = build_society_sets(splits, task, 3, critic_w=None, min_agreement=None)
    strict = build_society_sets(splits, task, 3, critic_w=None)
    assert all(len(x) == 0 for x in strict.values())
    assert [len(public[f"generator_{n}"]) for n in range(3)] == [0, 30, 0]  # agent 1 said "9"
    assert public["generator_1"].skipped_no_majority == 0 and strict["generator_1"].skipped_no_majority == 30


def test_eval_problems_are_the_same_for_every_run_seed():
    splits = [load_splits(compose_cfg([f"seed={s}", "dataset.n_train=50", "dataset.n_eval=50"]).dataset)
              for s in (0, 1, 2)]
    assert splits[0] == splits[1] == splits[2]
    other = load_splits(compose_cfg(["dataset.eval_seed=1", "dataset.n_train=50", "dataset.n_eval=50"]).dataset)
    assert other[1] != splits[0][1]  # another eval seed stream: another draw (e.g. a dev split)
    assert not {p.question for p in other[0]} & {p.question for p in other[1]}


def test_the_official_protocol_trains_on_the_eval_problems():
    train, eval_ = load_splits(compose_cfg(["dataset.protocol=official", "dataset.n_eval=20"]).dataset)
    assert train == eval_ and len(eval_) == 20


def test_the_official_protocol_is_marked_in_every_report_row():
    from mafl.metrics.results import Results
    from mafl.reporting.report import build_report
    from mafl.metrics.stats import MetricRecord

    def results(protocol):
        cfg = {"method": {"name": "multiagent_ft"}, "dataset": {"name": "arithmetic", "protocol": protocol},
               "model": {"name": "tiny"}, "seed": 0}
        recs = [MetricRecord(0, "eval", "accuracy/debate", 0.5, 0.1, 10),
                MetricRecord(0, "eval", "answers_per_problem", 6.0, 0.0, 10)]
        return Results.from_config(cfg, recs)

    text = build_report([results("heldout"), results("official")])
    assert "| tiny | multiagent_ft [official protocol] | 6 | – | 50.0 ± 10.0 (n=1) |" in text
    assert "| tiny | multiagent_ft | 6 | – | 50.0 ± 10.0 (n=1) |" in text


def test_majority_is_compute_matched_with_the_debate():
    from mafl.pipeline import validate

    s = validate(compose_cfg(["method=majority", "debate.agents=3", "debate.rounds=2"])).debate
    assert (s.agents, s.rounds) == (6, 1)  # N x R answers in one round, as many as the debate draws
    s = validate(compose_cfg(["method=majority", "method.samples=4"])).debate
    assert (s.agents, s.rounds) == (4, 1)
    s = validate(compose_cfg(["method=debate", "debate.agents=3", "debate.rounds=2"])).debate
    assert (s.agents, s.rounds) == (3, 2)
    with pytest.raises(ConfigError, match="^method.samples"):
        validate(compose_cfg(["method=majority", "method.samples=0"]))


def test_a_dev_split_is_another_stream_disjoint_from_eval_and_train_and_marked():
    from mafl.metrics.results import Results

    over = ["dataset.n_train=200", "dataset.n_eval=100"]
    train, eval_ = load_splits(compose_cfg(over).dataset)
    cfg = compose_cfg([*over, "dataset.split=dev"])
    dev_train, dev = load_splits(cfg.dataset)
    assert len(dev) == 100 and all(p.id.startswith("arithmetic/dev/") for p in dev)
    questions = {p.question for p in dev}
    assert not questions & {p.question for p in eval_} and not questions & {p.question for p in dev_train}
    assert dev_train == train  # the same train problems: only what the run is measured on changes
    assert load_splits(compose_cfg([*over, "dataset.split=dev", "seed=3"]).dataset)[1] == dev
    from omegaconf import OmegaConf

    label = Results.from_config(OmegaConf.to_container(cfg, resolve=True)).method
    assert label == "multiagent_ft [dev split]"


def test_a_bad_split_is_refused_naming_the_key():
    from mafl.pipeline import validate
    from mafl.errors import ConfigError

    with pytest.raises(ConfigError, match="dataset.split"):
        validate(compose_cfg(["dataset.split=test"]))
