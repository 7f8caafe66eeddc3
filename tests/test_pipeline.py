"""The whole loop on a random tiny model: run folder layout, results, and a killed run that resumes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import compose_cfg
from mafl.errors import ConfigError
from mafl.pipeline import run

FAST = ["debug=smoke", "dataset.n_train=8", "dataset.n_eval=6", "debate.max_new_tokens=24", "debate.chunk_size=4",
        "metrics.diversity_problems=3"]


def records(run_dir: Path) -> list[tuple]:
    data = json.loads((run_dir / "results.json").read_text())
    return sorted((r["iteration"], r["metric"], str(r["agent"]), str(r.get("other")), round(r["value"], 6))
                  for r in data["records"])


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
                            stderr=subprocess.DEVNULL, start_new_session=True)
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
    transcripts = (run_dir / "iter_1/eval/transcripts.jsonl").read_text().splitlines()
    assert len(transcripts) == 4
    first = json.loads(transcripts[0])
    gold = first["problem"]["answer"]
    assert gold and all(gold not in m["content"] for rnd in first["rounds"] for t in rnd for m in t["messages"]
                        if len(gold) > 3)
    accuracy = [r for r in results.records if r.metric == "accuracy/debate" and r.agent is None]
    assert [r.iteration for r in accuracy] == [0, 1] and all(0.0 <= r.value <= 1.0 for r in accuracy)


def test_the_default_model_is_built_on_first_use_and_cached(tmp_path, monkeypatch):
    """`model=tiny` pretrains the embedded model into $MAFL_HOME once, then runs like any model folder."""
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
