"""The whole loop on a random tiny model: run folder layout, results, and a killed run that resumes."""
from __future__ import annotations

import json
import os
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import compose_cfg, subprocess_env
from mafl.errors import ConfigError, RunError
from mafl.pipeline import run

FAST = ["debug=smoke", "dataset.n_train=8", "dataset.n_eval=6", "debate.max_new_tokens=24", "debate.chunk_size=4",
        "metrics.diversity_problems=3"]


def records(run_dir: Path) -> list[tuple]:
    data = json.loads((run_dir / "results.json").read_text())
    return sorted((r["iteration"], r["metric"], str(r["agent"]), str(r.get("other")), round(r["value"], 6))
                  for r in data["records"])


def read_transcripts(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def unexplained_words(transcript: dict, templates: dict) -> list[str]:
    """What the agents' messages hold besides the question, the prompt templates' literal text and what agents said
    in earlier rounds (responses and summaries): the words left once those are cut out. Only agent numbers may be
    left; a gold answer given to an agent would be."""
    question = transcript["problem"]["question"]
    literals = {lit for t in templates.values() for lit, *_ in string.Formatter().parse(t) if lit.strip()}
    left = []
    for r, turns in enumerate(transcript["rounds"]):
        said = [x for earlier in transcript["rounds"][:r] for t in earlier for x in (t["response"], t["summary"]) if x]
        said += [t["summary"] for t in turns if t["summary"]]
        for turn in turns:
            for message in turn["messages"]:
                text = message["content"]
                for piece in sorted({question, *said, *literals}, key=len, reverse=True):
                    text = text.replace(piece, "\n")
                left += text.split()
    return left


def assert_no_gold_in_prompts(transcripts: list[dict], templates: dict, agents: int) -> None:
    for t in transcripts:
        left = unexplained_words(t, templates)
        assert set(left) <= {str(n) for n in range(1, agents + 1)}, (t["problem"]["id"], left)


def test_the_gold_check_sees_a_leaked_answer():
    templates = {"round1": "{question} Answer it.", "debate": "{question}\nOthers:\n{others}\nAgain.",
                 "other": "Agent {agent}: {response}"}
    turn = {"response": "It is 7.", "summary": None}
    clean = {"problem": {"id": "p", "question": "What is 3+4?", "answer": "7"}, "rounds": [
        [{**turn, "messages": [{"role": "user", "content": "What is 3+4? Answer it."}]}] * 2,
        [{**turn, "messages": [{"role": "user", "content": "What is 3+4?\nOthers:\nAgent 2: It is 7.\nAgain."}]}]]}
    assert_no_gold_in_prompts([clean], templates, agents=2)
    leaked = json.loads(json.dumps(clean))
    leaked["rounds"][0][1]["messages"][0]["content"] = "What is 3+4? Answer it. (The answer is 7.)"
    with pytest.raises(AssertionError):
        assert_no_gold_in_prompts([leaked], templates, agents=2)


def assert_accuracy_is_the_share_of_right_final_answers(run_dir: Path, records, task) -> None:
    """``accuracy/debate`` of every iteration against the gold answers, graded here from the transcripts."""
    accuracy = {r["iteration"]: r["value"] for r in records if r["metric"] == "accuracy/debate" and r["agent"] is None}
    assert accuracy
    for k, value in accuracy.items():
        transcripts = read_transcripts(run_dir / f"iter_{k}" / "eval" / "transcripts.jsonl")
        right = [task.is_equivalent(t["final_answer"], t["problem"]["answer"]) for t in transcripts]
        assert value == pytest.approx(sum(right) / len(right))


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "uninterrupted"
    run(compose_cfg(FAST + [f"model.path={tiny_model_dir}", f"run_dir={run_dir}"]))
    return run_dir


def test_the_loop_writes_every_stage_of_every_iteration(finished_run):
    d = finished_run
    assert (d / "config.yaml").exists() and (d / "results.json").exists()
    for k in (0, 1):
        assert len((d / f"iter_{k}/eval/transcripts.jsonl").read_text().splitlines()) == 6
        assert (d / f"iter_{k}/eval/metrics.json").exists()
    models = ["generator_0", "generator_1", "generator_2", "critic_0", "critic_1", "critic_2"]
    for m in models:
        assert (d / "iter_1/sets" / f"{m}.jsonl").exists()
        assert (d / "iter_1/models" / m / "adapter_config.json").exists()
    assert len((d / "iter_1/train/transcripts.jsonl").read_text().splitlines()) == 8
    results = json.loads((d / "results.json").read_text())
    metrics = {(r["iteration"], r["metric"]) for r in results["records"] if r["agent"] is None}
    for k in (0, 1):
        for m in ("accuracy/debate", "accuracy/agent_round1", "consensus", "kl/agents", "nll", "embedding_dissimilarity"):
            assert (k, m) in metrics
    assert set(results["finetune"]["1"]["sets"]) == set(models)
    assert results["config"]["debate"]["agents"] == 3


def test_the_loop_gives_agents_no_gold_and_reports_graded_accuracy(finished_run):
    from mafl.tasks import get_task

    templates = dict(compose_cfg().dataset.prompts)
    for path in sorted(finished_run.glob("iter_*/*/transcripts.jsonl")):
        assert_no_gold_in_prompts(read_transcripts(path), templates, agents=3)
    records = json.loads((finished_run / "results.json").read_text())["records"]
    assert_accuracy_is_the_share_of_right_final_answers(finished_run, records, get_task("arithmetic"))


def test_same_command_on_a_finished_run_recomputes_nothing(finished_run, tiny_model_dir):
    stamp = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file() and "results.json" not in p.name}
    before = records(finished_run)
    run(compose_cfg(FAST + [f"model.path={tiny_model_dir}", f"run_dir={finished_run}"]))
    assert records(finished_run) == before
    changed = [p for p, t in stamp.items() if p.exists() and p.stat().st_mtime_ns != t and p.name != "config.yaml"]
    assert changed == []


def test_another_config_in_the_same_folder_is_refused(finished_run, tiny_model_dir):
    with pytest.raises(ConfigError, match=r"^debate.rounds: differs from the run"):
        run(compose_cfg(FAST + [f"model.path={tiny_model_dir}", f"run_dir={finished_run}", "debate.rounds=3"]))
    with pytest.raises(ConfigError, match=r"^resume:"):
        run(compose_cfg(FAST + [f"model.path={tiny_model_dir}", f"run_dir={finished_run}", "resume=false"]))


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_numbers(finished_run, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "killed"
    args = FAST + [f"model.path={tiny_model_dir}", f"run_dir={run_dir}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    proc = subprocess.Popen([sys.executable, "-m", "mafl", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=subprocess_env())
    marker = run_dir / "iter_1" / "models" / "generator_1.json"  # killed in the middle of the fine-tunes
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the run ended before reaching the fine-tunes"
    assert not (run_dir / "results.json").exists() or not (run_dir / "iter_1/eval/metrics.json").exists()
    kept = {p: p.stat().st_mtime_ns for p in (run_dir / "iter_0").rglob("*") if p.is_file()}
    generator_0 = (run_dir / "iter_1/models/generator_0/adapter_model.safetensors").stat().st_mtime_ns

    run(compose_cfg(args[:-1]))  # the same command again
    assert records(run_dir) == records(finished_run)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # iteration 0 was not recomputed
    assert (run_dir / "iter_1/models/generator_0/adapter_model.safetensors").stat().st_mtime_ns == generator_0


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["gsm8k", "math"])
def test_the_loop_runs_on_the_real_benchmarks(dataset, shared_data, tiny_model_dir, tmp_path):
    run_dir = tmp_path / dataset
    results = run(compose_cfg(FAST + [f"dataset={dataset}", f"dataset.data_dir={shared_data}", "dataset.n_train=4",
                                      "dataset.n_eval=4", f"model.path={tiny_model_dir}", f"run_dir={run_dir}",
                                      "metrics.diversity=false"]))
    assert results.dataset == dataset
    from mafl.tasks import get_task

    templates = dict(compose_cfg([f"dataset={dataset}"]).dataset.prompts)
    for k in (0, 1):
        transcripts = read_transcripts(run_dir / f"iter_{k}/eval/transcripts.jsonl")
        assert len(transcripts) == 4 and all(t["problem"]["answer"] for t in transcripts)
        assert_no_gold_in_prompts(transcripts, templates, agents=3)
    records = json.loads((run_dir / "results.json").read_text())["records"]
    assert_accuracy_is_the_share_of_right_final_answers(run_dir, records, get_task(dataset))
    assert sorted(r["iteration"] for r in records if r["metric"] == "accuracy/debate" and r["agent"] is None) == [0, 1]


def test_a_changed_tiny_recipe_is_built_on_first_use_and_cached(tmp_path, monkeypatch):
    """`model=tiny` with a recipe mafl does not ship pretrains it into $MAFL_HOME once, then runs like any model
    folder (the default recipe's shipped model: tests/test_tiny_shipped.py)."""
    monkeypatch.setenv("MAFL_HOME", str(tmp_path / "home"))
    small = ["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_hidden_layers=1",
             "model.tiny.num_attention_heads=2", "model.tiny.steps=5", "model.tiny.batch_size=4",
             "finetune.iterations=0", "metrics.diversity=false", "dataset.n_eval=4"]
    run(compose_cfg(FAST + small + [f"run_dir={tmp_path / 'a'}"]))
    built = list((tmp_path / "home" / "tiny").glob("*/config.json"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    run(compose_cfg(FAST + small + [f"run_dir={tmp_path / 'b'}"]))
    assert built[0].stat().st_mtime_ns == stamp  # cached: not pretrained again
    assert (tmp_path / "b" / "iter_0" / "eval" / "transcripts.jsonl").exists()
    # each run records the weights it started from, and goes on only from them
    recipe_file = built[0].parent / "recipe.json"
    recipe = json.loads(recipe_file.read_text())
    assert json.loads((tmp_path / "a" / "results.json").read_text())["model_weights"] == recipe["weights_sha256"]
    recipe_file.write_text(json.dumps({**recipe, "weights_sha256": "f" * 64}))  # as if rebuilt on another CPU
    with pytest.raises(RunError, match=rf"^{tmp_path / 'a'} started from base weights {recipe['weights_sha256'][:12]}, "
                                       r"and this machine's are ffffffffffff \(the tiny model built on another kind"):
        run(compose_cfg(FAST + small + [f"run_dir={tmp_path / 'a'}"]))


def test_full_fine_tuning_through_the_loop(talking_model_dir, tmp_path):
    """``finetune=full``: every model of the society is saved as a whole model and served as one by the
    transformers backend in the next debate. Greedy decoding makes the three agents agree in round 1 (one base
    model, one prompt), and the random model changes its answer in round 2, so the critics' sets hold D- examples
    (``critic_w=1``: only those) and the generators' sets are empty (their folders then hold the base model). A
    forced eos (``backend.generate_kwargs``) ends every answer at ``max_new_tokens``, so none is cut off."""
    from mafl.backends import GenerationRequest, Sampling
    from mafl.backends.hf import HFBackend

    from mafl.models import load_tokenizer

    run_dir = tmp_path / "full"
    forced_eos = {"forced_eos_token_id": load_tokenizer(str(talking_model_dir)).eos_token_id}
    results = run(compose_cfg(FAST + [f"model.path={talking_model_dir}", f"run_dir={run_dir}", "finetune=full",
                                      "debate.temperature=0", "finetune.critic_w=1", "metrics.diversity=false",
                                      "finetune.train.learning_rate=0.05", "finetune.train.warmup_steps=0",
                                      "finetune.train.lr_scheduler_type=constant",
                                      "finetune.train.gradient_accumulation_steps=1",
                                      f"+backend.generate_kwargs.forced_eos_token_id={forced_eos['forced_eos_token_id']}"]))
    models = ["generator_0", "generator_1", "generator_2", "critic_0", "critic_1", "critic_2"]
    tuned = results.finetune["1"]["models"]
    for m in models:
        folder = run_dir / "iter_1" / "models" / m
        assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
        assert not (folder / "adapter_config.json").exists()
        assert tuned[m]["mode"] == "full"
        sets = results.finetune["1"]["sets"][m]
        if m.startswith("critic"):
            assert tuned[m]["trained"] and tuned[m]["num_examples"] == sets["size"] == sets["d_minus"] > 0
        else:
            assert not tuned[m]["trained"] and tuned[m]["num_examples"] == sets["size"] == 0

    # the eval debate of iteration 1 was spoken by the whole fine-tuned models, each in its own turns
    before = read_transcripts(run_dir / "iter_0" / "eval" / "transcripts.jsonl")
    after = read_transcripts(run_dir / "iter_1" / "eval" / "transcripts.jsonl")
    greedy = Sampling(temperature=0.0, max_new_tokens=24)
    for m in models:
        turns = [turn for t in after for rnd in t["rounds"] for turn in rnd if turn["model"] == m]
        assert len(turns) == 6
        own = HFBackend(str(run_dir / "iter_1" / "models" / m), generate_kwargs=forced_eos).generate(
            [GenerationRequest(turn["messages"], sampling=greedy) for turn in turns])
        assert [turn["response"] for turn in turns] == [c.text for c in own], m
    said = lambda ts: [turn["response"] for t in ts for rnd in t["rounds"] for turn in rnd]  # noqa: E731
    assert said(after) != said(before)
