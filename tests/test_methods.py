"""The methods on the shared loop, with a scripted backend and a recording fake fine-tune: which models exist,
what their sets hold (STaR's rationales and rationalisations, Majority FT's majority-agreeing samples), general
data mixing, global-to-local order, and starting from saved weights."""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from helpers import COUNTING_TASK, ScriptedBackend, compose_cfg, question_numbers
from mafl.pipeline import validate
from mafl.errors import ConfigError
from mafl.tasks.prompts import Prompts
from mafl.finetune.mixing import GENERAL, general_count, load_general, mix_general
from mafl.finetune.sets import Example, FinetuneSet
from mafl.finetune.finetune_one import FinetuneResult
from mafl.methods import make_society
from mafl.methods.star import RATIONALE, RATIONALIZATION, check_hint, hinted
from mafl.pipeline import run
from mafl.tasks.base import Problem

HINT = re.compile(r"Hint: the answer is (-?\d+)")


def gold(question: str) -> int:
    a, b, c, d, e, f = question_numbers(question)
    return a + b * c + d - e * f


def question_of(request) -> str:
    return request.messages[-1]["content"]


class FakeFinetune:
    """Stands in for ``finetune_job``: records (iteration folder, model, init, examples) and writes a folder."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, job, examples, pairs=None, prompts=None, *, base=None):
        out_dir, init_adapter = Path(job.out_dir), job.init
        out_dir.mkdir(parents=True)
        (out_dir / "adapter_config.json").write_text("{}")
        self.calls.append({"iteration": out_dir.parent.parent.name, "model": out_dir.name, "init": init_adapter,
                           "examples": list(examples.examples)})
        return FinetuneResult(out_dir=out_dir, mode="lora", num_examples=len(examples), trained=bool(len(examples)),
                              init=init_adapter)


@pytest.fixture()
def fake_run(tmp_path, monkeypatch):
    """run(cfg) on a scripted backend and a fake fine-tune; returns (results, backend, fine-tune calls, run_dir)."""
    import mafl.backends
    import mafl.finetune.finetune_one

    def go(answer_fn, overrides):
        backend = ScriptedBackend(answer_fn)
        fake = FakeFinetune()
        monkeypatch.setattr(mafl.backends, "backend_class", lambda name: (lambda *a, **k: backend))
        monkeypatch.setattr(mafl.finetune.finetune_one, "finetune_job", fake)
        run_dir = tmp_path / "run"
        cfg = compose_cfg(["logger=none", f"model.path={tmp_path}", "metrics.diversity=false", "dataset.n_train=6",
                           "dataset.n_eval=4", "finetune.iterations=1", f"run_dir={run_dir}", *overrides])
        results = run(cfg)
        return results, backend, fake, run_dir

    return go


def read_set(path: Path) -> FinetuneSet:
    return FinetuneSet.load(path)


# -- STaR ------------------------------------------------------------------------------------------------------

def star_answer(request) -> str:
    """Right on problems whose first number is even; with a hint, it reaches the hinted answer when the first
    number is divisible by 3, and says 0 otherwise."""
    text = question_of(request)
    hint = HINT.search(text)
    first = question_numbers(text)[0]
    if hint:
        return f"Using the hint. The answer is {hint.group(1) if first % 3 == 0 else 99999}."
    return f"Thinking. The answer is {gold(text) if first % 2 == 0 else 99999}."


def test_star_keeps_right_rationales_and_rationalises_failures_without_the_hint(fake_run):
    results, backend, fake, run_dir = fake_run(star_answer, ["method=star", "finetune.iterations=2"])
    train = [json.loads(line)["problem"] for line in (run_dir / "iter_1" / "train" / "transcripts.jsonl").open()]
    firsts = {p["id"]: int(re.findall(r"\d+", p["question"])[0]) for p in train}
    right = {i for i, f in firsts.items() if f % 2 == 0}
    rationalised = {i for i, f in firsts.items() if f % 2 == 1 and f % 3 == 0}
    assert right and rationalised and len(right) + len(rationalised) < len(train)  # the script covers every case

    s = read_set(run_dir / "iter_1" / "sets" / "model.jsonl")
    kinds = {e.problem_id: e.kind for e in s.examples}
    assert {i for i, k in kinds.items() if k == RATIONALE} == right
    assert {i for i, k in kinds.items() if k == RATIONALIZATION} == rationalised
    assert all(e.correct and "Hint" not in json.dumps(e.prompt) for e in s.examples)
    questions = {p["id"]: p["question"] for p in train}
    prompts = Prompts.from_cfg(compose_cfg().dataset.prompts)
    for e in s.examples:  # trained with the original prompt, the response that reached the answer
        assert list(e.prompt) == prompts.first_round(questions[e.problem_id])
        assert e.response.endswith(f"{gold(questions[e.problem_id])}.")

    # the rationalisation requests carried the gold answer as a hint, only for the failed problems
    hinted_calls = [r for call in backend.calls for r in call if HINT.search(question_of(r))]
    assert {int(HINT.search(question_of(r)).group(1)) for r in hinted_calls} <= {gold(question_of(r))
                                                                                   for r in hinted_calls}
    assert len(hinted_calls) == 2 * (len(train) - len(right))  # once per failed problem, in each iteration

    # one model, fine-tuned from the base model every iteration (finetune.init=base), evaluated alone
    assert [(c["iteration"], c["model"], c["init"]) for c in fake.calls] == [("iter_1", "model", None),
                                                                          ("iter_2", "model", None)]
    iteration2_train = [r for call in backend.calls for r in call if r.adapter == "model"
                        and not HINT.search(question_of(r))]
    assert iteration2_train  # the iteration-1 model samples the rationales of iteration 2
    eval_tx = [json.loads(line) for line in (run_dir / "iter_2" / "eval" / "transcripts.jsonl").open()]
    assert all(len(t["rounds"]) == 1 and len(t["rounds"][0]) == 1 for t in eval_tx)
    assert {r.iteration for r in results.records} == {0, 1, 2}


def test_star_hint_template_is_checked():
    assert check_hint("{question} (answer: {answer})")
    with pytest.raises(ConfigError, match=r"^method.rationalize:"):
        check_hint("{question} without the answer")
    with pytest.raises(ConfigError, match=r"^method.rationalize:"):
        check_hint("{question} {answer} {solution}")
    p = hinted(Problem(id="a", question="What is 2+2?", answer="4"), "{question} (Hint: the answer is {answer}.)")
    assert (p.id, p.answer, p.question) == ("a", "4", "What is 2+2? (Hint: the answer is 4.)")


def test_star_refuses_a_debate(fake_run):
    with pytest.raises(ConfigError, match=r"^debate.rounds:"):
        fake_run(star_answer, ["method=star", "debate.rounds=2"])


# -- Majority FT -----------------------------------------------------------------------------------------------

def voting_answer():
    """Agent n (the n-th request of each problem; 3 agents) answers: on problems with an even first number agents 0
    and 1 give the gold answer and agent 2 another; otherwise agent 0 gives the gold answer and agents 1, 2 agree
    on a wrong one. In later rounds every agent gives the round-1 majority (the minority goes wrong-to-right).
    Responses differ per agent, so none is a duplicate."""
    counter = itertools.count()

    def answer(request) -> str:
        agent = next(counter) % 3
        text = question_of(request)
        if not question_numbers(text):  # a summary request (the method summarises): no question in it
            return f"Agent {agent + 1} says something."
        g = gold(text)
        if "other agents" in text:
            value = g if question_numbers(text)[0] % 2 == 0 else g + 7
        elif question_numbers(text)[0] % 2 == 0:
            value = g if agent < 2 else g + 1
        else:
            value = g if agent == 0 else g + 7
        return f"Agent style {agent}. The answer is {value}."

    return answer


def test_majority_ft_trains_one_model_on_round_one_samples_that_agree_with_their_majority(fake_run):
    results, backend, fake, run_dir = fake_run(voting_answer(), ["method=majority_ft"])
    train = [json.loads(line) for line in (run_dir / "iter_1" / "train" / "transcripts.jsonl").open()]
    assert all(len(t["rounds"]) == 1 and len(t["rounds"][0]) == 3 for t in train)  # N samples, one round
    expected = {(t["problem"]["id"], turn["response"]) for t in train for turn in t["rounds"][0]
                if turn["answer"] == t["final_answer"]}
    assert len(expected) == 2 * len(train)

    assert sorted(p.name for p in (run_dir / "iter_1" / "sets").glob("*.jsonl")) == ["model.jsonl"]
    s = read_set(run_dir / "iter_1" / "sets" / "model.jsonl")
    assert {(e.problem_id, e.response) for e in s.examples} == expected
    # the majority, not the ground truth: on odd problems the wrong majority is what it learns
    assert any(not e.correct for e in s.examples) and any(e.correct for e in s.examples)
    assert [c["model"] for c in fake.calls] == ["model"]
    eval_calls = [call for call in backend.calls if call and call[0].adapter == "model"]
    assert eval_calls and all(len(call) == 3 * 4 for call in eval_calls)  # 3 samples of the one model


# -- the ablations' societies ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method,models,rounds", [
    ("multiagent_ft", ["generator_0", "generator_1", "generator_2", "critic_0", "critic_1", "critic_2"], 2),
    ("multiagent_ft_no_summary", ["generator_0", "generator_1", "generator_2", "critic_0", "critic_1", "critic_2"], 2),
    ("multiagent_ft_no_critics", ["generator_0", "generator_1", "generator_2"], 2),
    ("multiagent_ft_no_debate", ["generator_0", "generator_1", "generator_2"], 1),
    ("multiagent_ft_single_model", ["model"], 2),
    ("majority_ft", ["model"], 1),
    ("star", ["model"], 1),
])
def test_each_method_preset_makes_its_society(method, models, rounds):
    cfg = compose_cfg([f"method={method}"])
    settings = validate(cfg)
    assert make_society(settings).models == models
    assert settings.debate.rounds == rounds
    # the paper's method summarises; "without summary" is its ablation (the one-round methods have nothing to sum)
    assert settings.debate.summarize == (method in ("multiagent_ft", "multiagent_ft_no_critics",
                                                    "multiagent_ft_single_model"))


def test_ablation_labels_are_distinct():
    from helpers import CONF

    labels = [compose_cfg([f"method={p.stem}"]).method.label for p in sorted((CONF / "method").glob("*.yaml"))]
    assert len(labels) == len(set(labels)) >= 10


def test_single_model_ablation_trains_one_model_on_every_agents_generator_and_critic_data(fake_run):
    _, _, fake, run_dir = fake_run(voting_answer(), ["method=multiagent_ft_single_model"])
    s = read_set(run_dir / "iter_1" / "sets" / "model.jsonl")
    assert {e.kind for e in s.examples} == {"generator", "d_minus", "d_plus"}
    assert [c["model"] for c in fake.calls] == ["model"]


def test_untuned_methods_never_fine_tune(fake_run):
    results, _, fake, _ = fake_run(voting_answer(), ["method=debate", "finetune.iterations=0"])
    assert fake.calls == []
    assert {r.iteration for r in results.records} == {0}


@pytest.mark.parametrize("method", ["single", "majority", "debate"])
def test_an_untuned_method_asked_to_fine_tune_is_refused(fake_run, method, tmp_path):
    with pytest.raises(ConfigError) as err:
        fake_run(voting_answer(), [f"method={method}", "finetune.iterations=3"])
    message = str(err.value)
    assert message.startswith(f"finetune.iterations: method {method} does not fine-tune (got 3)")
    assert "\n" not in message
    assert not (tmp_path / "run").exists()  # refused before any work


def test_smoke_gives_one_iteration_to_the_methods_that_fine_tune():
    from mafl.methods import METHODS

    for name in METHODS:
        cfg = compose_cfg([f"method={name}", "debug=smoke"])
        assert cfg.finetune.iterations == (1 if METHODS.get(name).finetunes else 0), name
        validate(cfg)
    assert [m for m in METHODS if not METHODS.get(m).finetunes] == ["single", "majority", "self_refine", "debate"]


# -- global-to-local -------------------------------------------------------------------------------------------

def test_global_first_trains_one_shared_model_then_each_model_from_it(fake_run):
    _, _, fake, run_dir = fake_run(voting_answer(), ["finetune.global_first=true", "finetune.iterations=2"])
    models = ["generator_0", "generator_1", "generator_2", "critic_0", "critic_1", "critic_2"]
    for k in (1, 2):
        calls = [c for c in fake.calls if c["iteration"] == f"iter_{k}"]
        assert [c["model"] for c in calls] == ["global", *models]
        glob = str(run_dir / f"iter_{k}" / "models" / "global")
        assert all(c["init"] == glob for c in calls[1:])
        # the global set holds every model's examples
        assert {e.key for c in calls[1:] for e in c["examples"]} == {e.key for e in calls[0]["examples"]}
    first_global, second_global = [c for c in fake.calls if c["model"] == "global"]
    assert first_global["init"] is None
    assert second_global["init"] == str(run_dir / "iter_1" / "models" / "global")  # finetune.init=previous


def test_without_global_first_each_model_continues_its_own_weights(fake_run):
    _, _, fake, run_dir = fake_run(voting_answer(), ["finetune.iterations=2"])
    assert "global" not in {c["model"] for c in fake.calls}
    second = {c["model"]: c["init"] for c in fake.calls if c["iteration"] == "iter_2"}
    assert second["critic_1"] == str(run_dir / "iter_1" / "models" / "critic_1")


# -- general data mixing ---------------------------------------------------------------------------------------

def write_general(path: Path, n: int) -> Path:
    rows = [{"question": f"Name a colour, {i}.", "answer": f"Blue {i}."} for i in range(n // 2)]
    rows += [{"prompt": [{"role": "user", "content": f"Say {i}."}], "completion": f"{i}."} for i in range(n - n // 2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def own_set(name: str, n: int) -> FinetuneSet:
    return FinetuneSet(name=name, examples=[Example(prompt=[{"role": "user", "content": f"q{i}"}], response=f"r{i}",
                                                    problem_id=str(i), correct=True) for i in range(n)])


def test_mixing_adds_general_rows_so_own_examples_make_up_eta(tmp_path):
    general = load_general(write_general(tmp_path / "g.jsonl", 40))
    assert len(general) == 40 and all(e.kind == GENERAL for e in general)
    assert general[0].prompt == [{"role": "user", "content": "Name a colour, 0."}]
    assert general[-1].response == "19."
    mixed = mix_general(own_set("generator_0", 5), general, eta=0.2, seed=3)
    assert general_count(5, 0.2) == 20
    assert len(mixed) == 25 and sum(e.kind == GENERAL for e in mixed.examples) == 20
    assert mixed.examples[:5] == own_set("generator_0", 5).examples
    again = mix_general(own_set("generator_0", 5), general, eta=0.2, seed=3)
    other_seed = mix_general(own_set("generator_0", 5), general, eta=0.2, seed=4)
    other_model = mix_general(own_set("critic_0", 5), general, eta=0.2, seed=3)
    assert again.examples == mixed.examples  # deterministic by seed
    assert other_seed.examples != mixed.examples and other_model.examples != mixed.examples
    assert len(mix_general(own_set("a", 5), general, eta=1.0, seed=0)) == 5
    assert len(mix_general(own_set("a", 50), general, eta=0.5, seed=0)) == 90  # the file has only 40 rows


def test_a_malformed_general_row_names_its_line(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"question": "a", "answer": "b"}\n{"text": "no fields"}\n')
    with pytest.raises(ValueError, match=r"g.jsonl:2"):
        load_general(path)


def test_the_loop_saves_mixed_sets(fake_run, tmp_path):
    path = write_general(tmp_path / "general.jsonl", 200)
    _, _, fake, run_dir = fake_run(voting_answer(), [f"finetune.mix_general={{path: {path}, eta: 0.5}}"])
    report = json.loads((run_dir / "iter_1" / "sets" / "report.json").read_text())
    for call in fake.calls:
        general = sum(e.kind == GENERAL for e in call["examples"])
        assert general == len(call["examples"]) - general  # eta=0.5: as many general rows as own examples
        assert report[call["model"]]["kinds"].get(GENERAL, 0) == general
    assert any(report[m]["size"] > 0 for m in report)


@pytest.mark.parametrize("value,key", [("{path: /no/such.jsonl, eta: 0.2}", "finetune.mix_general.path"),
                                       ("{path: GENERAL, eta: 0}", "finetune.mix_general.eta")])
def test_bad_mixing_settings_are_refused(fake_run, tmp_path, value, key):
    path = write_general(tmp_path / "general.jsonl", 4)
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}:"):
        fake_run(voting_answer(), [f"finetune.mix_general={value.replace('GENERAL', str(path))}"])


# -- starting from saved weights (zero-shot transfer) ----------------------------------------------------------

def test_a_society_starts_from_saved_weights(fake_run, tmp_path):
    folder = tmp_path / "trained" / "iter_2" / "models"
    models = ("generator_0", "generator_1", "generator_2", "critic_0", "critic_1", "critic_2")
    for m in models:
        (folder / m).mkdir(parents=True)
    results, backend, fake, _ = fake_run(voting_answer(), ["experiment=transfer_gsm8k", "dataset=arithmetic",
                                                           "finetune.iterations=0", f"method.weights={folder}"])
    assert fake.calls == [] and {r.iteration for r in results.records} == {0}
    assert backend.loaded == {m: str(folder.resolve() / m) for m in models}  # every model, from its own folder
    requests = [r for call in backend.calls for r in call]
    assert {r.adapter for r in requests if question_numbers(question_of(r))} == set(models)
    assert {r.adapter for r in requests if not question_numbers(question_of(r))} == {None}  # base-model summaries
    assert results.config["method"]["label"] == "multiagent_ft_transfer"


def test_missing_saved_weights_are_refused(fake_run, tmp_path):
    (tmp_path / "models" / "generator_0").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"^method.weights: .* no weights for generator_1"):
        fake_run(voting_answer(), [f"method.weights={tmp_path / 'models'}"])


def test_validate_gives_the_settings_a_method_runs_with(tmp_path):
    """majority: N x R samples in one round, already in the settings (its society and its saved weights too)."""
    settings = validate(compose_cfg(["method=majority", "debate.agents=3", "debate.rounds=2"]))
    assert (settings.debate.agents, settings.debate.rounds) == (6, 1)
    assert make_society(settings).models == [f"generator_{n}" for n in range(6)]
    for n in range(3):
        (tmp_path / f"generator_{n}").mkdir()
    with pytest.raises(ConfigError, match=r"^method.weights: .* no weights for generator_3, generator_4, generator_5"):
        validate(compose_cfg(["method=majority", "debate.agents=3", "debate.rounds=2", f"method.weights={tmp_path}"]))


# -- finetune.critic_w and finetune.max_examples, from the command line to the fine-tunes ----------------------

def sets_by_model(fake) -> dict[str, list[Example]]:
    return {c["model"]: c["examples"] for c in fake.calls}


def test_critic_w_and_max_examples_reach_the_fine_tunes(fake_run):
    """With ``voting_answer``: on even problems agent 2 goes wrong-to-right (D-), on odd ones agent 0 does; agent 1
    is never wrong in round 1 against the final majority. ``critic_w=1`` keeps only D-, ``critic_w=0`` only D+, and
    ``max_examples`` caps every set."""
    _, _, only_minus, run_dir = fake_run(voting_answer(), ["finetune.critic_w=1.0", "finetune.max_examples=2"])
    train = [json.loads(line)["problem"] for line in (run_dir / "iter_1" / "train" / "transcripts.jsonl").open()]
    even = {p["id"] for p in train if question_numbers(p["question"])[0] % 2 == 0}
    odd = {p["id"] for p in train} - even
    assert even and odd
    sets = sets_by_model(only_minus)
    assert all(len(s) <= 2 for s in sets.values())
    assert {e.kind for m in ("critic_0", "critic_2") for e in sets[m]} == {"d_minus"}
    assert {e.problem_id for e in sets["critic_0"]} <= odd and len(sets["critic_0"]) == min(2, len(odd))
    assert {e.problem_id for e in sets["critic_2"]} <= even and len(sets["critic_2"]) == min(2, len(even))
    assert sets["critic_1"] == []  # no D- at all
    assert len(sets["generator_1"]) == 2  # agrees on all six problems: capped
    report = json.loads((run_dir / "iter_1" / "sets" / "report.json").read_text())
    assert report["generator_1"]["size"] == 2

    _, _, only_plus, run_dir = fake_run(voting_answer(), ["finetune.critic_w=0.0", f"run_dir={run_dir}_plus"])
    sets = sets_by_model(only_plus)
    assert {e.kind for m in ("critic_0", "critic_1", "critic_2") for e in sets[m]} == {"d_plus"}
    assert {e.problem_id for e in sets["critic_0"]} == even and {e.problem_id for e in sets["critic_2"]} == odd
    assert len(sets["critic_1"]) == len(train) and len(sets["generator_1"]) == len(train)  # no cap


def test_the_reported_accuracy_is_that_of_the_debates_final_answers(fake_run):
    """``voting_answer``'s debates end right exactly on the problems whose first number is even; each agent's
    round-1 answer is right on even problems for agents 0 and 1, on every problem for agent 0."""
    results, _, _, run_dir = fake_run(voting_answer(), ["method=debate", "finetune.iterations=0"])
    problems = [json.loads(line)["problem"] for line in (run_dir / "iter_0" / "eval" / "transcripts.jsonl").open()]
    even = sum(question_numbers(p["question"])[0] % 2 == 0 for p in problems) / len(problems)
    assert 0 < even < 1
    value = {(r.metric, r.agent): r.value for r in results.records if r.iteration == 0}
    assert value[("accuracy/debate", None)] == pytest.approx(even)
    assert value[("accuracy/agent_round1", 0)] == pytest.approx(1.0)
    assert value[("accuracy/agent_round1", 2)] == pytest.approx(0.0)


def test_every_stage_of_every_iteration_has_its_wall_time(fake_run):
    results, _, fake, run_dir = fake_run(voting_answer(), ["finetune.iterations=2"])
    saved = json.loads((run_dir / "results.json").read_text())["timings"]
    assert set(saved) == {"0", "1", "2"}
    assert set(saved["0"]) == {"eval_debate", "metrics"}
    models = make_society(validate(compose_cfg([f"model.path={run_dir}"]))).models
    assert set(saved["1"]) == {"train_debate", "sets", "finetune", "eval_debate", "metrics",
                               *(f"finetune/{m}" for m in models)}
    assert all(v >= 0 for stages in saved.values() for v in stages.values())
    assert saved == {k: json.loads((run_dir / f"iter_{k}" / "timings.json").read_text()) for k in saved}


def test_report_shows_where_the_time_went(tmp_path):
    from mafl.metrics import Results, write_results
    from mafl.reporting.report import build_report

    timings = {"0": {"eval_debate": 10.0, "metrics": 2.0},
               "1": {"train_debate": 30.0, "sets": 1.0, "finetune": 50.0, "finetune/generator_0": 20.0,
                     "finetune/critic_0": 30.0, "eval_debate": 6.0, "metrics": 1.0}}
    config = {"method": {"name": "multiagent_ft"}, "dataset": {"name": "arithmetic"}, "model": {"name": "tiny"}}
    write_results(tmp_path / "run", Results.from_config(config, [], timings=timings))
    from mafl.metrics.results import load_results

    text = build_report(load_results(tmp_path))
    section = text.split("## where the time went")[1]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in section.splitlines() if line.startswith("| ") and "stage" not in line}
    assert rows["train_debate"] == ["", "30.0", "30.0", "30%"]
    assert rows["finetune"] == ["", "50.0", "50.0", "50%"]
    assert rows["eval_debate"] == ["10.0", "6.0", "16.0", "16%"]
    assert rows["&nbsp;&nbsp;critic_0"] == ["", "30.0", "30.0", ""]


# -- a method and a task from outside the package ------------------------------------------------------------------

OUTSIDE = COUNTING_TASK + '''
from mafl.methods.society_loop import build_sets, run_society_loop


def round_one_sets(session, society, iteration):
    """Each model trains on its agents' round-1 answers only: a debate of one round."""
    from dataclasses import replace

    from mafl.debate.engine import derive_seed, run_debate

    with session.run.timed(iteration, "train_debate"):
        transcripts = run_debate(
            session.generation.backend(society, stage=session.run.stage(iteration, "train")), session.task,
            session.train, society, replace(session.debate, rounds=1), session.prompts,
            seed=derive_seed(session.settings.seed, "train", iteration), out_dir=session.run.split(iteration, "train"),
            progress=False, desc="round one")
    return build_sets(session, society, transcripts, seed=0)


def run_round_one(run_dir, settings):
    return run_society_loop(run_dir, settings, train_sets=round_one_sets)
'''


def test_a_method_and_a_task_from_outside_the_package_run(fake_run, tmp_path, monkeypatch):
    """The two files of each (docs/extending.md): a module with the task and the method's runner, a
    registered Method; the task named by its "module:Class", the method by its registered name."""
    from mafl.methods import METHODS, Method

    (tmp_path / "outside.py").write_text(OUTSIDE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(METHODS._entries, "round_one_ft", Method("round_one_ft", "outside:run_round_one",
                                                                  finetunes=True, shared=True))

    def count(request):
        asked = re.search(r"How many letters in (a+)[?]", " ".join(m["content"] for m in request.messages))
        return f"The answer is {len(asked.group(1))}." if asked else "A summary: 3."

    results, backend, fake, run_dir = fake_run(count, ["method.name=round_one_ft", "method.label=round_one_ft",
                                                       "dataset.task=outside:CountingTask", "~dataset.low",
                                                       "~dataset.high"])
    assert results.method == "round_one_ft"
    train = [json.loads(line) for line in (run_dir / "iter_1" / "train" / "transcripts.jsonl").open()]
    assert train and all(len(t["rounds"]) == 1 and t["problem"]["question"].startswith("How many") for t in train)
    assert [call["model"] for call in fake.calls] == ["model"]  # one shared model, as registered
    assert [r.value for r in results.select("accuracy/debate")] == [1.0, 1.0]  # iterations 0 and 1
