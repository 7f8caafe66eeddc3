"""GRPO with trl of the shrunk embedded model (it writes answers that end, in the task's form; a random model's
never end, so they would all be cut off and earn 0): a step changes the adapter and not the base, prompts tokenized
as the backends do, the scored groups recorded; the gold answer poisoned changes nothing a society-vote reward trains; a
fine-tune killed half-way (SIGKILL, after trl wrote a checkpoint) is trained again from scratch to the adapter of an
uninterrupted one; the config checks; and, slow, the multiagent_grpo loop."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from helpers import compose_cfg, one_torch_thread, subprocess_env, train_checking_lora  # noqa: E402
from mafl.errors import ConfigError  # noqa: E402
from mafl.finetune.finetune_one import finetune_model  # noqa: E402
from mafl.finetune.grpo import build_grpo_trainer, group_metrics  # noqa: E402
from mafl.finetune.job_runner import run_job  # noqa: E402
from mafl.finetune.jobs import FinetuneJob  # noqa: E402
from mafl.finetune.rl_prompts import PromptSet, RLPrompt, build_society_prompts, prompts_path  # noqa: E402
from mafl.pipeline import validate  # noqa: E402
from parity_task import ParityTask  # noqa: E402
from test_finetune_one import LORA, examples  # noqa: E402
from test_finetune_sets import transcript  # noqa: E402

TESTS = Path(__file__).resolve().parent
TASK = ParityTask()
GRPO = {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 48,
        "learning_rate": 5e-2, "logging_steps": 1, "gradient_checkpointing": False}


def question(i: int) -> list[dict]:
    """A round-1 prompt of the arithmetic debate (the shrunk model answers it with a chain that ends)."""
    return [{"role": "system", "content": "You are an agent who solves math problems step by step."},
            {"role": "user", "content": f"What is the result of {i}+{i + 1}*2+3-4*{i}? Make sure to state your "
                                        f"answer at the end of the response."}]


def prompts(n: int = 4, target: str = "even") -> PromptSet:
    items = [RLPrompt(prompt=question(i), problem_id=str(i), target=target) for i in range(n)]
    return PromptSet("generator_0", "majority", items)


def test_grpo_step_changes_the_adapter_not_the_base(small_tiny_model_dir, tmp_path):
    from mafl.backends.chat import prompt_ids

    trainer = build_grpo_trainer(str(small_tiny_model_dir), prompts(), tmp_path / "work", task=TASK, lora=LORA,
                                 grpo=GRPO)
    first = prompts().prompts[0].prompt
    assert trainer._tokenize_prompts([first])[0] == [prompt_ids(trainer.processing_class, first)]
    train_checking_lora(trainer)
    groups = trainer.recorder.groups  # 2 steps x 2 prompts, each a group of 4 completions scored 0 or 1
    assert len(groups) == 4 and all(len(g["rewards"]) == 4 and set(g["rewards"]) <= {0.0, 1.0} for g in groups)
    metrics = group_metrics(groups)
    assert metrics["groups"] == 4 and 0 < metrics["share_with_variance"] <= 1


def test_group_metrics_on_literal_groups():
    groups = [{"step": 0, "rewards": [1.0, 1.0]}, {"step": 0, "rewards": [0.0, 1.0]},
              {"step": 1, "rewards": [0.0, 0.0]}]
    assert group_metrics(groups) == {"groups": 3, "share_with_variance": pytest.approx(1 / 3),
                                     "mean_reward": 0.5, "mean_reward_first_step": 0.75, "mean_reward_last_step": 0.0}
    assert group_metrics([])["share_with_variance"] is None


def test_no_prompts_keeps_the_init_weights(small_tiny_model_dir, tmp_path):
    result = finetune_model(str(small_tiny_model_dir), examples(), tmp_path / "none", lora=LORA, objective="grpo",
                            prompts=PromptSet("critic_0", "majority"), grpo=GRPO, task=TASK)
    assert not result.trained and result.num_prompts == 0 and result.objective == "grpo"
    weights = load_file(tmp_path / "none" / "adapter_model.safetensors")
    assert all(v.abs().sum() == 0 for k, v in weights.items() if "lora_B" in k)


def debate(gold: str):
    """Hand-made debates answered even/odd (the parity task), every problem's gold answer ``gold``."""
    rows = [(["even", "odd", "even"], ["even", "even", "even"], "even"),
            (["odd", "odd", "even"], ["odd", "odd", "odd"], "odd"),
            (["even", "odd", "odd"], ["odd", "odd", "even"], "odd")]
    out = []
    for i, (first, last, final) in enumerate(rows):
        t = transcript(str(i), [first, last], final, gold=gold)
        for rnd in t.rounds:
            for turn in rnd:
                turn.messages = question(i) if turn.round == 0 else question(i) + [
                    {"role": "assistant", "content": "The answer is 7."},
                    {"role": "user", "content": f"Agent 2 says {i}. Agent 3 says 7. Give an updated answer."}]
                turn.correct = turn.answer == gold
        out.append(replace(t, correct=final == gold))
    return out


def adapter(out: Path) -> dict:
    return load_file(out / "adapter_model.safetensors")


def test_the_society_vote_rewards_never_read_the_gold_answer(small_tiny_model_dir, tmp_path):
    """Every gold answer poisoned: majority and correction train the same adapters; gold (RLVR) does not."""
    trained = {}
    for gold in ("even", "poisoned"):
        for reward, model in (("majority", "generator_0"), ("correction", "critic_1"), ("gold", "generator_0")):
            ps = build_society_prompts(debate(gold), TASK, 3, reward)[model]
            out = tmp_path / f"{gold}-{reward}"
            result = finetune_model(str(small_tiny_model_dir), examples(), out, lora=LORA, objective="grpo", prompts=ps,
                                    grpo=GRPO, reward=reward, task=TASK, seed=3)
            assert result.trained and result.reward == reward and result.reads_gold == (reward == "gold")
            trained[gold, reward] = adapter(out)
    for reward in ("majority", "correction"):
        same, poisoned = trained["even", reward], trained["poisoned", reward]
        assert same.keys() == poisoned.keys() and all(torch.equal(same[k], poisoned[k]) for k in same)
        assert any(v.abs().sum() > 0 for k, v in same.items() if "lora_B" in k)  # it did train
    gold, poisoned = trained["even", "gold"], trained["poisoned", "gold"]
    assert any(not torch.equal(gold[k], poisoned[k]) for k in gold)


def test_the_correction_bonus_reaches_the_adapter(small_tiny_model_dir, tmp_path):
    """critic_1's prompts: one D- (its round-1 answer differed from the label) and two D+. The bonus weighs the D-
    prompt's group above the others in the batch, so it changes what is trained: correction's adapter is far from the
    one it trains with no bonus (about 0.6 of its size), and from majority's. Under trl's group scaling the two would
    differ only by the rounding of its std epsilon (about 0.0006): the bonus cancels out."""
    ps = build_society_prompts(debate("even"), TASK, 3, "correction")["critic_1"]
    assert sorted(p.earlier_agreed for p in ps.prompts) == [False, True, True]
    trained, metrics = {}, {}
    # critic replies are long (48 tokens cut most off); all three prompts in every batch, scaled together
    grpo = {**GRPO, "max_completion_length": 192, "max_steps": 2, "per_device_train_batch_size": 12}
    for name, reward, kwargs in (("majority", "majority", {}), ("bonus 0", "correction", {"bonus": 0.0}),
                                 ("bonus 1", "correction", {"bonus": 1.0})):
        out = tmp_path / name
        result = finetune_model(str(small_tiny_model_dir), examples(), out, lora=LORA, objective="grpo", prompts=ps,
                                grpo=grpo, reward=reward, reward_kwargs=kwargs, task=TASK, seed=3)
        trained[name], metrics[name] = adapter(out), result.grpo_metrics
    assert metrics["bonus 1"]["share_with_variance"] > 0  # some group had an advantage to learn from
    assert metrics["bonus 1"]["mean_reward"] > metrics["bonus 0"]["mean_reward"]  # the bonus was paid
    lora_b = [k for k in trained["bonus 1"] if "lora_B" in k]

    def apart(a: str, b: str) -> float:  # how far two adapters are, relative to the size of the first
        return (sum((trained[a][k] - trained[b][k]).norm() ** 2 for k in lora_b)
                / sum(trained[a][k].norm() ** 2 for k in lora_b)).sqrt().item()

    for other in ("bonus 0", "majority"):  # far apart, not the rounding of trl's std epsilon under group scaling
        assert apart("bonus 1", other) > 0.01


def grpo_job(tmp_path: Path, small_tiny_model_dir, name: str, **grpo) -> FinetuneJob:
    sets = tmp_path / name / "sets"
    examples().save(sets / "generator_0.jsonl")
    ps = prompts(6)
    ps.prompts[1:3] = [replace(p, target="odd") for p in ps.prompts[1:3]]
    ps.save(prompts_path(sets, "generator_0"))
    return FinetuneJob(model="generator_0", set_path=str(sets / "generator_0.jsonl"),
                       out_dir=str(tmp_path / name / "models" / "generator_0"), init=None, seed=5,
                       base_path=str(small_tiny_model_dir), lora=LORA, objective="grpo",
                       prompts_path=str(prompts_path(sets, "generator_0")), grpo={**GRPO, "max_steps": 4, **grpo},
                       reward="majority", task={"task": "parity_task:ParityTask"})


def test_a_grpo_fine_tune_killed_half_way_is_trained_again_from_scratch(small_tiny_model_dir, tmp_path):
    """SIGKILL once trl has saved a checkpoint of the fine-tune: nothing of it is taken as done, and the same job run
    again trains from scratch (not from that checkpoint) to the adapter of a fine-tune never interrupted."""
    job = grpo_job(tmp_path, small_tiny_model_dir, "killed", save_strategy="steps", save_steps=1)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job.to_json()))
    code = "import json, sys; from mafl.finetune.job_runner import run_job; run_job(json.load(open(sys.argv[1])))"
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(TESTS.parent), str(TESTS)]), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", code, str(job_file)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True, env=env)
    models = Path(job.out_dir).parent
    deadline = time.time() + 300
    while (not list(models.glob(".generator_0.trainer-*/checkpoint-1")) and proc.poll() is None
           and time.time() < deadline):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(models.glob(".generator_0.trainer-*/checkpoint-1")), proc.stderr.read().decode()[-2000:]
    assert not job.done() and not Path(job.out_dir).exists()

    record = run_job(job)  # the same job again, here
    assert job.done() and record["trained"] and record["global_step"] == 4 and len(record["losses"]) == 4
    assert record["grpo_metrics"]["groups"] == 8  # 4 steps x 2 prompts: no group of the killed run counted
    clean = grpo_job(tmp_path, small_tiny_model_dir, "clean", save_strategy="steps", save_steps=1)
    run_job(clean)
    resumed, uninterrupted = adapter(Path(job.out_dir)), adapter(Path(clean.out_dir))
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


@pytest.mark.parametrize("where", ["ray", "slurm"])
def test_the_ray_and_slurm_launchers_train_the_grpo_adapters_of_the_local_one(where, small_tiny_model_dir, tmp_path,
                                                                              monkeypatch):
    """Two GRPO fine-tunes (different seeds) on a real local Ray cluster, in its worker processes, or as a SLURM job
    array through submitit's local executor, in job processes: bit for bit the adapters the local launcher trains in
    this process from its shared base model."""
    from mafl.finetune.launchers import make_launcher
    from test_finetune_launchers import settings, slurm_local_launcher

    def jobs(folder: str) -> list[FinetuneJob]:
        first = grpo_job(tmp_path / folder, small_tiny_model_dir, "a", max_steps=2)
        second = grpo_job(tmp_path / folder, small_tiny_model_dir, "b", max_steps=2)
        return [first, replace(second, seed=6)]

    def launcher(*overrides: str):
        return make_launcher(settings(*overrides), tmp_path)

    local = jobs("local")
    with one_torch_thread():  # as the other processes (OMP_NUM_THREADS=1): two thread counts round differently
        assert [r["trained"] for r in launcher().run(local)] == [True, True]
    # the other processes import the checkout under test and the parity task beside the tests
    path = os.pathsep.join([subprocess_env()["PYTHONPATH"], str(TESTS)])
    remote = jobs(where)
    if where == "ray":
        ray = pytest.importorskip("ray")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
        try:
            records = launcher("finetune.launcher=ray", "finetune.resources.num_cpus=1").run(remote)
        finally:
            ray.shutdown()
    else:
        pytest.importorskip("submitit")
        monkeypatch.setenv("PYTHONPATH", path)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        records = slurm_local_launcher(tmp_path).run(remote)
    assert [r["objective"] for r in records] == ["grpo", "grpo"] and all(r["grpo_metrics"]["groups"] for r in records)
    for a, b in zip(local, remote):
        wa, wb = adapter(Path(a.out_dir)), adapter(Path(b.out_dir))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), a.out_dir
    w0, w1 = adapter(Path(local[0].out_dir)), adapter(Path(local[1].out_dir))
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if "lora_B" in k)  # the check tells two adapters apart


def test_grpo_settings_are_checked_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^finetune.grpo.num_generation: unknown key; not an argument of trl "
                                          r"GRPOConfig$"):
        validate(compose_cfg(["method=multiagent_grpo", "+finetune.grpo.num_generation=4"]))
    with pytest.raises(ConfigError, match=r"^finetune.grpo: generation_batch_size \(8\) must be divisible by "
                                          r"num_generations \(3\)"):
        validate(compose_cfg(["method=multiagent_grpo", "finetune.grpo.num_generations=3"]))
    with pytest.raises(ConfigError, match=r"^finetune.reward: 'vote' is not one of majority, gold, correction$"):
        validate(compose_cfg(["method=multiagent_grpo", "finetune.reward=vote"]))
    with pytest.raises(ConfigError, match=r"^finetune.grpo.scale_rewards: 'group' scales each prompt's group to "
                                          r"unit variance, which cancels reward correction's bonus"):
        validate(compose_cfg(["method=multiagent_grpo", "finetune.reward=correction",
                              "+finetune.grpo.scale_rewards=group"]))
    with pytest.raises(ConfigError, match=r"^finetune.reward: gold reads the gold answer, which method "
                                          r"multiagent_grpo never does; RL from the gold answer is "
                                          r"method=multiagent_rlvr$"):
        validate(compose_cfg(["method=multiagent_grpo", "finetune.reward=gold"]))
    with pytest.raises(ConfigError, match=r"^finetune.reward: method multiagent_rlvr rewards agreement with the gold"):
        validate(compose_cfg(["method=multiagent_rlvr", "finetune.reward=majority"]))
    with pytest.raises(ConfigError, match=r"^finetune.objective: method multiagent_ft trains with sft, dpo, sft\+dpo "
                                          r"\(got grpo\)$"):
        validate(compose_cfg(["method=multiagent_ft", "finetune.objective=grpo"]))
    general = tmp_path / "general.jsonl"
    general.write_text('{"question": "Hi?", "answer": "Hello."}\n')
    with pytest.raises(ConfigError, match=r"^finetune.mix_general: general data mixes into the SFT sets, which "
                                          r"objective grpo does not train on"):
        validate(compose_cfg(["method=multiagent_grpo", f"finetune.mix_general={{path: {general}, eta: 0.5}}"]))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(ConfigError, match="^finetune.objective: launcher=openai runs SFT jobs only"):
        validate(compose_cfg(["method=multiagent_grpo", "finetune=openai", "backend=openai", "model=gpt35"]))


def test_each_grpo_method_trains_with_grpo_and_its_reward():
    for method, reward in (("multiagent_grpo", "majority"), ("majority_grpo", "majority"),
                           ("multiagent_rlvr", "gold")):
        ft = validate(compose_cfg([f"method={method}"])).finetune
        assert (ft.objective, ft.reward, ft.uses_prompts) == ("grpo", reward, True)
    ft = validate(compose_cfg(["method=multiagent_grpo", "finetune.reward=correction",
                               "+finetune.reward_kwargs.bonus=0.5"])).finetune
    assert (ft.reward, ft.reward_kwargs) == ("correction", {"bonus": 0.5})
    assert ft.grpo["scale_rewards"] == "batch"  # the bonus survives the scaling of the advantages
    # a mixed society: each agent's models from its own base; the one-model baseline refuses it
    assert validate(compose_cfg(["experiment=mixed_tiny", "logger=none", "method=multiagent_grpo"])).society.mixed
    with pytest.raises(ConfigError, match=r"^society.models: method majority_grpo has one shared model"):
        validate(compose_cfg(["experiment=mixed_tiny", "logger=none", "method=majority_grpo"]))


@pytest.mark.slow
def test_multiagent_grpo_runs_the_loop_and_a_rerun_trains_nothing(small_tiny_model_dir, tmp_path):
    """The whole loop, one iteration, on a shrunk embedded model: every model's prompts and GRPO record, the RL
    table of the report, and the same command again recomputes nothing."""
    from mafl.pipeline import run
    from mafl.reporting.report import report_main

    run_dir = tmp_path / "run"
    args = ["method=multiagent_grpo", "finetune.reward=correction", "debug=smoke", "dataset.n_train=8",
            "dataset.n_eval=4", "debate.chunk_size=4", "debate.max_new_tokens=72", "metrics.diversity=false",
            "finetune.min_agreement=0.3", f"model.path={small_tiny_model_dir}", f"run_dir={run_dir}"]
    run(compose_cfg(args))
    sets_dir, models_dir = run_dir / "iter_1" / "sets", run_dir / "iter_1" / "models"
    results = json.loads((run_dir / "results.json").read_text())
    total = 0
    for m in ["generator_0", "generator_1", "generator_2", "critic_0", "critic_1", "critic_2"]:
        saved = PromptSet.load(prompts_path(sets_dir, m))
        record = json.loads((models_dir / f"{m}.json").read_text())
        assert record["objective"] == "grpo" and record["reward"] == "correction"
        assert record["num_prompts"] == len(saved) == results["finetune"]["1"]["sets"][m]["prompts"]["prompts"]
        assert record["trained"] == bool(len(saved)) and (models_dir / m / "adapter_model.safetensors").exists()
        total += len(saved)
    assert total > 0 and results["method"] == "multiagent_grpo [correction reward]"
    assert "## reinforcement learning (GRPO) by iteration" in report_main([str(run_dir)])
    stamp = {p: p.stat().st_mtime_ns for p in (run_dir / "iter_1").rglob("*") if p.is_file()}
    run(compose_cfg(args))
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())
