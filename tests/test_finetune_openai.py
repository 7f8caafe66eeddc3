"""finetune=openai against a local fine-tuning service on 127.0.0.1 (files and fine-tuning jobs: queued -> running ->
succeeded / failed): sets uploaded as chat JSONL, one job per model, job ids kept in the run folder so that a run
killed while its jobs run re-attaches to them (nothing uploaded or created twice), a failed job's reason, and the
fine-tuned model ids as the next society, spoken with through backend=openai (mafl serve)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from finetune_server import FAIL_REASON, FinetuneService
from helpers import compose_cfg, subprocess_env
from mafl.errors import RunError
from mafl.pipeline import run
from serving import AppThread, mafl_serve

pytest.importorskip("openai")
pytest.importorskip("fastapi")

LOOP = ["debug=smoke", "dataset.n_train=8", "dataset.n_eval=4", "debate.chunk_size=4", "debate.temperature=0",
        "debate.max_new_tokens=72", "metrics.diversity_problems=2", "finetune=openai", "finetune.openai.poll_seconds=0.05",
        "finetune.openai.min_examples=1"]
MODELS = ["generator_0", "generator_1", "generator_2", "critic_0", "critic_1", "critic_2"]


def test_a_run_killed_while_its_jobs_run_re_attaches_and_the_fine_tuned_models_speak(tmp_path,
                                                                                     small_tiny_model_dir):
    base = str(small_tiny_model_dir)
    run_dir = tmp_path / "run"
    with mafl_serve(["--model", base], tmp_path / "serve.log") as server:
        service = FinetuneService(model_folder=base, serve_url=server.url)
        with AppThread(service.app()) as ft:
            args = LOOP + [f"model.path={base}", "backend=openai", f"backend.base_url={server.url}", f"finetune.openai.base_url={ft.url}",
                           f"run_dir={run_dir}"]
            service.gate.clear()  # the jobs run until the test lets them finish
            log = open(tmp_path / "run.log", "wb")
            proc = subprocess.Popen([sys.executable, "-m", "mafl", *args, f"hydra.run.dir={tmp_path / 'hydra'}"],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env=subprocess_env(OMP_NUM_THREADS="1"))
            states = [run_dir / "iter_1" / "models" / f"{m}.openai.json" for m in MODELS]
            deadline = time.time() + 600
            while time.time() < deadline and proc.poll() is None:
                saved = [json.loads(p.read_text()) for p in states if p.exists()]
                if len(saved) == len(MODELS) and all(s.get("status") in ("running", "skipped") for s in saved):
                    break
                time.sleep(0.1)
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            saved = {m: json.loads(p.read_text()) for m, p in zip(MODELS, states)}
            started = {m: s["job_id"] for m, s in saved.items() if s.get("job_id")}
            assert started and all(service.jobs[j]["status"] == "running" for j in started.values())
            files, jobs = dict(service.files), dict(service.jobs)
            assert len(files) == len(jobs) == len(started)
            # every uploaded file is the model's set as chat JSONL
            for m, s in saved.items():
                if m in started:
                    rows = [json.loads(line) for line in files[s["file_id"]].decode().splitlines()]
                    assert len(rows) == s["examples"] > 0
                    assert all(r["messages"][-1]["role"] == "assistant" and r["messages"][0]["role"] != "assistant"
                               for r in rows)
                else:
                    assert s["status"] == "skipped" and s["examples"] == 0

            service.gate.set()
            run(compose_cfg(args))  # the same command: re-attaches to the running jobs
            assert service.files.keys() == files.keys() and service.jobs.keys() == jobs.keys()  # nothing paid twice

    models = {m: json.loads((run_dir / "iter_1" / "models" / m / "api_model.json").read_text())["model"]
              for m in MODELS}
    for m in MODELS:
        want = service.jobs[started[m]]["fine_tuned_model"] if m in started else base
        assert models[m] == want
    assert any(v.startswith("ft:") for v in models.values())
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["finetune"]["1"]["models"]) == set(MODELS)
    assert {r["iteration"] for r in results["records"] if r["metric"] == "accuracy/debate"} == {0, 1}
    usage = json.loads((run_dir / "usage.json").read_text())
    spoken = {r["served_model"] for r in usage["rows"] if r["stage"] == "iter_1/eval"}
    assert {v for v in models.values() if v.startswith("ft:")} <= spoken  # the fine-tuned models spoke


def write_set(path, n: int) -> None:
    from mafl.finetune.sets import Example, FinetuneSet

    FinetuneSet(name="generator_0", examples=[
        Example(prompt=[{"role": "user", "content": f"What is {k}+1?"}], response=f"The answer is {k + 1}.",
                problem_id=str(k), correct=True) for k in range(n)]).save(path)


def test_a_failed_job_stops_the_run_with_the_api_reason_and_is_not_created_again(tmp_path):
    from mafl.finetune.api import OpenAILauncher
    from mafl.finetune.settings import FinetuneSettings

    write_set(tmp_path / "generator_0.jsonl", 12)
    service = FinetuneService()
    with AppThread(service.app()) as ft:
        settings = FinetuneSettings.from_cfg(compose_cfg(["finetune=openai", f"finetune.openai.base_url={ft.url}",
                                                          "finetune.openai.suffix=fail-test",
                                                          "finetune.openai.poll_seconds=0.01"]).finetune)
        out = tmp_path / "models" / "generator_0"
        job = SimpleNamespace(model="generator_0", set_path=str(tmp_path / "generator_0.jsonl"), out_dir=str(out),
                              record=out.parent / "generator_0.json", init=None, seed=3, base_path="gpt-3.5-turbo")
        for attempt in range(2):
            launcher = OpenAILauncher(settings, tmp_path)
            with pytest.raises(RunError) as e:
                launcher.run([job])
            launcher.close()
            assert "\n" not in str(e.value) and "ftjob-1" in str(e.value) and FAIL_REASON in str(e.value)
        assert len(service.jobs) == 1 and len(service.files) == 1  # the second attempt re-attached to the job
        assert service.jobs["ftjob-1"]["model"] == "gpt-3.5-turbo" and service.jobs["ftjob-1"]["seed"] == 3
        assert not out.exists() and not job.record.exists()


def test_validation_refuses_an_api_fine_tune_without_an_api_backend_and_a_key_in_the_config():
    from mafl.pipeline import ConfigError, validate

    with pytest.raises(ConfigError, match=r"^finetune.launcher: .*backend=openai"):
        validate(compose_cfg(["finetune=openai"]))
    with pytest.raises(ConfigError, match=r"^finetune.openai.api_key:"):
        validate(compose_cfg(["finetune=openai", "backend=openai", "+finetune.openai.api_key=sk-1"]))
    with pytest.raises(ConfigError, match=r"^finetune.openai.n_epochs: unknown key"):
        validate(compose_cfg(["finetune=openai", "backend=openai", "+finetune.openai.n_epochs=2"]))
