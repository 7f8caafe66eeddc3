"""A mixed society (``society.models``): one base model per agent. Two random tiny Llamas of different seeds and
hidden sizes are the bases: requests reach their own agent's base, each fine-tune starts from it, an adapter is
refused on another base, and the loop runs, resumes and reports each agent with its base."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import make_random_model
from helpers import compose_cfg
from mafl.backends.base import GenerationRequest, Sampling, ScoringRequest
from mafl.pipeline import validate
from mafl.errors import ConfigError
from mafl.models import ModelSettings, WrongBaseError, same_model
from mafl.pipeline import run

# answers of up to 48 tokens, and a plurality answer labels a problem: the small tiny models' sets are not empty
FAST = ["debug=smoke", "dataset.n_train=8", "dataset.n_eval=6", "debate.max_new_tokens=72", "debate.chunk_size=4",
        "metrics.diversity_problems=3", "metrics.embedding_model=null", "finetune.min_agreement=null"]
GREEDY = Sampling(temperature=0, max_new_tokens=12)


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> Path:
    """A second base: another seed and another hidden size than ``talking_model_dir`` (same tokenizer)."""
    return make_random_model(tmp_path_factory.mktemp("random_llama_other"), hidden=32, seed=1, tie=False)


@pytest.fixture(scope="module")
def small_tiny_other_dir(tmp_path_factory) -> Path:
    """``small_tiny_model_dir``'s recipe from another seed and with another hidden size: two quickly built bases
    that write answers in the tiny model's form, so a debate of them gives fine-tuning sets."""
    from hydra import compose, initialize_config_dir

    from mafl.tiny import ensure_tiny_model

    with initialize_config_dir(config_dir=str(Path(__file__).parents[1] / "mafl" / "conf"), version_base="1.3"):
        recipe = dict(compose(config_name="config").model.tiny)
    recipe.update(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, steps=300,
                  batch_size=16, warmup_steps=10, seed=1)
    return ensure_tiny_model(recipe, home=tmp_path_factory.mktemp("mafl_home_other"), progress=False)


def mixed(other: Path) -> list[str]:
    """Agents 0 and 2 speak with the run's model, agent 1 with ``other``."""
    return [f"society.models=[tiny,{{name:small,path:'{other}'}},tiny]"]


def messages(k: int) -> list[dict]:
    return [{"role": "user", "content": f"What is the result of {k}+4*5+6-7*8? Make sure to state your answer."}]


# -- config ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, error", [
    (["method=majority_ft"], r"^society.models: method majority_ft has one shared model"),
    (["method=majority"], r"^society.models: method majority has one shared model"),
    (["method=star"], r"^society.models: method star has one shared model"),
    (["method=multiagent_ft_single_model"], r"^society.models: method multiagent_ft_single_model has one shared"),
    (["debate.agents=2"], r"^society.models: needs one model per agent \(2, debate.agents\), got 3$"),
    (["society.models=[tiny,nope,tiny]"], r"^society.models\[1\]: 'nope' is not a model preset"),
    (["society.models=[tiny,{tiny:{seed:1}},tiny]"], r"^society.models\[1\]: a mapping needs a name"),
    (["society.models=[tiny,{name:tiny,tiny:{seed:1}},tiny]"], r"^society.models\[1\]: another base is already named"),
    (["society.models=[tiny,{name:x,size:1},tiny]"], r"^society.models\[1\].size: unknown key"),
    (["society.models=[tiny,{name:x,path:'/no/such/model'},tiny]"], r"^society.models\[1\]: model.path: no such"),
    (["finetune.global_first=true"], r"^finetune.global_first: one global model cannot start"),
    (["society.models=[]"], r"^society.models: must be a list"),
])
def test_a_bad_mixed_society_is_refused_in_one_line(overrides, error):
    cfg = compose_cfg(["experiment=mixed_tiny", "logger=none", *overrides])
    with pytest.raises(ConfigError, match=error) as e:
        validate(cfg)
    assert "\n" not in str(e.value)


def test_the_mixed_presets_compose_into_a_base_per_agent():
    tiny = validate(compose_cfg(["experiment=mixed_tiny", "logger=none"]))
    assert tiny.society.base_names == ["tiny", "tiny_s1", "tiny"]
    assert [m.tiny["seed"] for m in tiny.society.models] == [0, 1, 0]
    assert tiny.society.models[1].tiny["hidden_size"] == tiny.model.tiny["hidden_size"]  # the rest of the recipe
    hub = validate(compose_cfg(["experiment=mixed_hub", "logger=none", "device=cpu"]))
    assert [m.path for m in hub.society.models] == [OmegaConf.load(Path(__file__).parents[1] / "mafl/conf/model"
                                                                   / f"{m}.yaml").path
                                                    for m in ("phi3", "mistral", "llama3")]
    assert not validate(compose_cfg(["logger=none"])).society.mixed


def test_single_speaks_with_agent_0s_base():
    settings = validate(compose_cfg(["experiment=mixed_tiny", "logger=none", "method=single"]))
    assert settings.debate.agents == 1 and settings.society.base_names == ["tiny"]
    settings = validate(compose_cfg(["logger=none", "method=single",
                                     "society.models=[{name:tiny_s1,tiny:{seed:1}},tiny,tiny]"]))
    assert settings.society.base_names == ["tiny_s1"]


# -- the society's backend -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def society_backend(talking_model_dir, other_model_dir):
    from mafl.backends.hf import HFBackend
    from mafl.backends.society import SocietyBackend

    model = ModelSettings(name="x", path="x")
    backend = SocietyBackend.build(HFBackend, {"big": (str(talking_model_dir), model),
                                               "small": (str(other_model_dir), model)},
                                   {"generator_0": "big", "generator_1": "small"}, device="cpu", progress=False)
    yield backend
    backend.close()


def test_each_request_is_answered_by_its_own_agents_base(society_backend, talking_model_dir, other_model_dir):
    from mafl.backends.hf import HFBackend

    names = ["generator_0", "generator_1", "small", "generator_1", "generator_0", "big"]
    requests = [GenerationRequest(messages(k), adapter=n, sampling=GREEDY) for k, n in enumerate(names)]
    got = [c.text for c in society_backend.generate(requests)]
    plain = {b: HFBackend(str(p)) for b, p in (("big", talking_model_dir), ("small", other_model_dir))}
    base = {"generator_0": "big", "generator_1": "small", "big": "big", "small": "small"}
    want = [plain[base[n]].generate([GenerationRequest(r.messages, sampling=GREEDY)])[0].text
            for n, r in zip(names, requests)]
    assert got == want
    other = [plain["small" if base[n] == "big" else "big"].generate([GenerationRequest(r.messages, sampling=GREEDY)])[0].text
             for n, r in zip(names, requests)]
    assert got != other  # the two bases answer differently: the routing is seen
    scores = society_backend.score([ScoringRequest(messages(1), "The answer is 7.", adapter="generator_1")])
    assert scores[0].logprob == pytest.approx(
        plain["small"].score([ScoringRequest(messages(1), "The answer is 7.")])[0].logprob, abs=1e-4)
    assert society_backend.base_of("generator_1") == "small" and society_backend.adapters() == ["generator_0",
                                                                                                 "generator_1"]
    for bad in (None, "critic_0"):
        with pytest.raises(KeyError):
            society_backend.generate([GenerationRequest(messages(0), adapter=bad, sampling=GREEDY)])


def test_an_adapter_of_another_base_is_refused(society_backend, talking_model_dir, tmp_path):
    from mafl.finetune.finetune_one import finetune_model

    lora = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}
    made = finetune_model(str(talking_model_dir), [], tmp_path / "g0", lora=lora)
    assert made.base == str(talking_model_dir)
    with pytest.raises(WrongBaseError, match=r"^generator_1: the weights in .* were fine-tuned from .*, not from its"):
        society_backend.load_adapter("generator_1", str(tmp_path / "g0"))
    assert society_backend.weights() == {"big": [], "small": []}
    (tmp_path / "g0" / "finetune_result.json").unlink()  # weights made elsewhere: peft's own record says it too
    with pytest.raises(WrongBaseError):
        society_backend.load_adapter("generator_1", str(tmp_path / "g0"))
    society_backend.load_adapter("generator_0", str(tmp_path / "g0"))
    assert society_backend.weights() == {"big": ["generator_0"], "small": []}
    society_backend.unload("generator_0")
    assert society_backend.weights() == {"big": [], "small": []}


def test_tiny_models_of_one_recipe_and_weights_are_the_same_model_wherever_they_are_cached(tmp_path):
    import json

    from mafl.models import check_weights_base
    from mafl.tiny import weights_sha256

    for home, weights in (("a", b"model A"), ("b", b"model A"), ("cpu2", b"model B")):
        (tmp_path / home / "0123abcd").mkdir(parents=True)
        (tmp_path / home / "0123abcd" / "recipe.json").write_text("{}")
        (tmp_path / home / "0123abcd" / "model.safetensors").write_bytes(weights)
    (tmp_path / "c" / "4567").mkdir(parents=True)
    a, b, other_cpu = (str(tmp_path / h / "0123abcd") for h in ("a", "b", "cpu2"))
    assert same_model(a, b)
    assert not same_model(a, other_cpu)  # the same recipe built on another kind of CPU: other weights
    assert not same_model(a, str(tmp_path / "c/4567"))
    assert not same_model("microsoft/Phi-3-mini-128k-instruct", "mistralai/Mistral-7B-Instruct-v0.2")
    # an adapter records the base weights it was fine-tuned from: the same path on another machine is refused
    adapter = tmp_path / "critic_0"
    adapter.mkdir()
    (adapter / "finetune_result.json").write_text(json.dumps({"base": a, "base_weights": weights_sha256(a)}))
    check_weights_base(adapter, a, "critic_0")
    check_weights_base(adapter, b, "critic_0")
    (tmp_path / "a" / "0123abcd" / "model.safetensors").write_bytes(b"model B")  # rebuilt here on another CPU
    with pytest.raises(WrongBaseError, match=r"^critic_0: the weights in .* were fine-tuned from a build of .* with "
                                             r"weights [0-9a-f]{12}, not this one \([0-9a-f]{12}: the tiny model"):
        check_weights_base(adapter, a, "critic_0")


# -- the loop --------------------------------------------------------------------------------------------------------
def numbers(run_dir: Path) -> dict:
    data = json.loads((run_dir / "results.json").read_text())
    return {(r["iteration"], r["metric"], r["agent"], r.get("other")): r["value"] for r in data["records"]}


@pytest.fixture(scope="module")
def mixed_run(small_tiny_model_dir, small_tiny_other_dir, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("mixed") / "run"
    run(compose_cfg(FAST + [f"model.path={small_tiny_model_dir}", f"run_dir={run_dir}",
                            *mixed(small_tiny_other_dir)]))
    return run_dir


def test_the_loop_fine_tunes_each_model_from_its_own_agents_base(mixed_run, small_tiny_model_dir,
                                                                 small_tiny_other_dir):
    base = {0: str(small_tiny_model_dir), 1: str(small_tiny_other_dir), 2: str(small_tiny_model_dir)}
    society = json.loads((mixed_run / "society.json").read_text())
    assert [(a["base"], a["path"]) for a in society["agents"]] == [("tiny", base[0]), ("small", base[1]),
                                                                   ("tiny", base[2])]
    for n in range(3):
        for role in ("generator", "critic"):
            folder = mixed_run / "iter_1" / "models" / f"{role}_{n}"
            adapter = json.loads((folder / "adapter_config.json").read_text())
            assert adapter["base_model_name_or_path"] == base[n], folder
            assert json.loads((folder.parent / f"{folder.name}.json").read_text())["base"] == base[n]
    results = json.loads((mixed_run / "results.json").read_text())
    assert results["model"] == "tiny+small+tiny"
    assert results["finetune"]["1"]["models"]["critic_1"]["base"] == base[1]
    trained = {int(m.rsplit("_", 1)[1]) for m, r in results["finetune"]["1"]["models"].items() if r["trained"]}
    assert 1 in trained and trained & {0, 2}  # trained from each base, not only fresh adapters


def test_a_mixed_society_trains_each_model_by_grpo_from_its_own_base(small_tiny_model_dir, small_tiny_other_dir,
                                                                     tmp_path):
    """multiagent_grpo in a mixed society: each model samples its completions from, and is trained on, its own
    agent's base; agent 1's adapters are of the other base."""
    run_dir = tmp_path / "run"
    run(compose_cfg(FAST + ["method=multiagent_grpo", "finetune.iterations=1", "metrics.diversity=false",
                            f"model.path={small_tiny_model_dir}", f"run_dir={run_dir}", *mixed(small_tiny_other_dir)]))
    base = {0: str(small_tiny_model_dir), 1: str(small_tiny_other_dir), 2: str(small_tiny_model_dir)}
    results = json.loads((run_dir / "results.json").read_text())
    models = results["finetune"]["1"]["models"]
    for n in range(3):
        for role in ("generator", "critic"):
            name = f"{role}_{n}"
            assert (models[name]["objective"], models[name]["base"]) == ("grpo", base[n]), name
            if models[name]["trained"]:
                config = json.loads((run_dir / "iter_1" / "models" / name / "adapter_config.json").read_text())
                assert config["base_model_name_or_path"] == base[n], name
    trained = {int(m.rsplit("_", 1)[1]) for m, r in models.items() if r["trained"]}
    assert 1 in trained and trained & {0, 2}  # GRPO trained from each base


def test_each_agent_is_measured_against_its_own_base(mixed_run, small_tiny_other_dir):
    """Iteration 0 (untuned): every agent is its base, so KL against the base is 0 for each, and the KL between
    agents 0 and 2 (one base) is 0 while that between different bases is not; agent 1's NLL is its base's."""
    from mafl.backends.hf import HFBackend
    from mafl.debate.transcript import Transcript
    from mafl.metrics.diversity import diversity_subset

    n = numbers(mixed_run)
    for agent in range(3):
        assert n[(0, "kl/base", agent, None)] == pytest.approx(0.0, abs=1e-5)
    assert n[(0, "kl/agents", 0, 2)] == pytest.approx(0.0, abs=1e-5)
    assert n[(0, "kl/agents", 2, 0)] == pytest.approx(0.0, abs=1e-5)
    # a Monte-Carlo estimate over 3 problems of top-p samples: not 0, of either sign
    assert abs(n[(0, "kl/agents", 0, 1)]) > 1e-3 and abs(n[(0, "kl/agents", 1, 0)]) > 1e-3
    transcripts = [Transcript.from_json(json.loads(line))
                   for line in (mixed_run / "iter_0/eval/transcripts.jsonl").read_text().splitlines()]
    turns = [t.rounds[0][1] for t in diversity_subset(transcripts, 3)]
    scores = HFBackend(str(small_tiny_other_dir)).score([ScoringRequest(u.messages, u.response) for u in turns])
    nll = -sum(s.logprob for s in scores) / sum(s.num_tokens for s in scores)
    assert n[(0, "nll", 1, None)] == pytest.approx(nll, rel=1e-4)


def test_the_report_names_each_agents_base(mixed_run):
    from mafl.metrics.results import load_results
    from mafl.reporting.report import build_report

    text = build_report(load_results(mixed_run))
    assert "## each agent of tiny+small+tiny (multiagent_ft, arithmetic, seed 0) on eval" in text
    assert "| 1 | 1 (small) |" in text and "| 0 | 2 (tiny) |" in text
    assert "kl/agents (per token) at iteration 1" in text
    row = next(line for line in text.splitlines() if line.startswith("| 1 (small) | ") and "0.000" not in line)
    assert row.count("|") == 5


def test_a_mixed_run_resumes_where_it_stopped(mixed_run, small_tiny_model_dir, small_tiny_other_dir, tmp_path):
    """A copy without iteration 1's evaluation: the same command loads every adapter onto its base again (checked
    against it) and gives the same numbers; the finished run run again recomputes nothing."""
    args = FAST + [f"model.path={small_tiny_model_dir}", *mixed(small_tiny_other_dir)]
    copy = tmp_path / "copy"
    shutil.copytree(mixed_run, copy)
    shutil.rmtree(copy / "iter_1" / "eval")
    (copy / "results.json").unlink()
    run(compose_cfg(args + [f"run_dir={copy}"]))
    assert numbers(copy) == pytest.approx(numbers(mixed_run))
    stamp = {p: p.stat().st_mtime_ns for p in mixed_run.rglob("*") if p.is_file() and p.name != "results.json"}
    run(compose_cfg(args + [f"run_dir={mixed_run}"]))
    assert [p for p, t in stamp.items() if p.stat().st_mtime_ns != t and p.name != "config.yaml"] == []


def test_a_run_saved_before_society_existed_resumes(tmp_path):
    from mafl.pipeline import prepare_run_dir

    cfg = compose_cfg(["logger=none", f"run_dir={tmp_path}"])
    prepare_run_dir(cfg, tmp_path)
    saved = OmegaConf.load(tmp_path / "config.yaml")
    del saved["society"]
    OmegaConf.save(saved, tmp_path / "config.yaml")
    prepare_run_dir(cfg, tmp_path)  # no "society: differs"
    (tmp_path / "results.json").write_text("{}")  # a folder that holds work: another society would change it
    with pytest.raises(ConfigError, match=r"^society: differs"):
        prepare_run_dir(compose_cfg(["logger=none", "experiment=mixed_tiny"]), tmp_path)
