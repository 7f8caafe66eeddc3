"""The whole loop with backend=openai against ``mafl serve`` started as a real subprocess on 127.0.0.1: the same
transcripts and numbers as backend=hf in-process (greedy decoding); a server that fails at random (429, 500,
dropped connections) or is killed mid-debate and restarted; an API key that reaches no file and no log."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import compose_cfg, subprocess_env
from mafl.errors import RunError
from mafl.pipeline import run
from serving import ServeProcess, free_port, mafl_serve

pytest.importorskip("openai")
pytest.importorskip("fastapi")

# a small tiny model (its debates give fine-tuning sets), greedy decoding, 3 chunks of eval problems
LOOP = ["debug=smoke", "dataset.n_train=8", "dataset.n_eval=6", "debate.chunk_size=2", "debate.temperature=0",
        "debate.max_new_tokens=72", "metrics.diversity_problems=3", "metrics.diversity_rounds=[first,final]",
        "finetune.train.per_device_train_batch_size=1", "finetune.train.num_train_epochs=3"]
CANARY = "sk-canary-7f3a9c0e5b1d4e2f"


def api(url: str, *extra: str) -> list[str]:
    return ["backend=openai", f"backend.base_url={url}", *extra]


def transcripts(run_dir: Path) -> dict[str, list[dict]]:
    return {str(p.relative_to(run_dir)): [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(run_dir.glob("iter_*/*/transcripts.jsonl"))}


def numbers(run_dir: Path) -> dict[tuple, float]:
    data = json.loads((run_dir / "results.json").read_text())
    return {(r["iteration"], r["split"], r["metric"], r["agent"], r.get("other")): r["value"] for r in data["records"]}


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """The same debates (every problem once, in order) and the same numbers (likelihoods and embeddings, computed by a
    network whose float sums depend on the thread count of the process, to float precision)."""
    got, want = transcripts(run_dir), transcripts(reference)
    assert list(got) == list(want)
    for name in want:
        ids = [t["problem"]["id"] for t in got[name]]
        assert ids == [t["problem"]["id"] for t in want[name]] and len(set(ids)) == len(ids), name
        assert got[name] == want[name], name
    a, b = numbers(run_dir), numbers(reference)
    assert a.keys() == b.keys()
    for key, value in b.items():
        if key[2].startswith(("kl/", "nll", "embedding_dissimilarity")):
            assert a[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
        else:
            assert a[key] == value, key


@pytest.fixture(scope="module")
def model(small_tiny_model_dir) -> list[str]:
    return [f"model.path={small_tiny_model_dir}"]


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory, model) -> Path:
    run_dir = tmp_path_factory.mktemp("hf") / "run"
    run(compose_cfg(LOOP + model + [f"run_dir={run_dir}"]))
    return run_dir


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, model, small_tiny_model_dir):
    """backend=openai as a user runs it (``python -m mafl``, verbose, its key in OPENAI_API_KEY) against mafl
    serve, which requires that key."""
    root = tmp_path_factory.mktemp("api")
    run_dir, log = root / "run", root / "run.log"
    with mafl_serve(["--model", str(small_tiny_model_dir), "--api-key-env", "MAFL_TEST_SERVER_KEY"], root / "serve.log",
                    env={"MAFL_TEST_SERVER_KEY": CANARY}) as server:
        with open(log, "wb") as out:
            proc = subprocess.run(
                [sys.executable, "-m", "mafl", *LOOP, *model, *api(server.url), f"run_dir={run_dir}", "verbose=true",
                 f"hydra.run.dir={root / 'hydra'}"], stdout=out, stderr=subprocess.STDOUT,
                env=subprocess_env(OPENAI_API_KEY=CANARY, OMP_NUM_THREADS="1"), timeout=900)
    assert proc.returncode == 0, log.read_text()[-3000:]
    return root


def test_the_loop_through_mafl_serve_equals_the_in_process_backend(api_run, hf_run):
    run_dir = api_run / "run"
    assert_same_run(run_dir, hf_run)
    # not the equality of empty debates: the models were fine-tuned on real sets (locally), and the server's
    # fine-tuned models are not the base model: KL against the base model of the generators' round-1 answers or of
    # the critics' last-round answers (which of them got examples depends on the model's answers)
    sizes = json.loads((run_dir / "iter_1/sets/report.json").read_text())
    assert sum(s["size"] for s in sizes.values()) > 0
    assert (run_dir / "iter_1/models/generator_0/adapter_config.json").exists()
    n = numbers(run_dir)
    assert max(n[(1, "eval", "kl/base", None, None)], n[(1, "eval", "kl/base_final", None, None)]) > 0


def test_the_usage_ledger_counts_every_request_by_stage_and_model(api_run):
    run_dir = api_run / "run"
    usage = json.loads((run_dir / "usage.json").read_text())
    stages = {r["stage"] for r in usage["rows"]}
    assert {"iter_0/eval", "iter_1/train", "iter_1/eval", "iter_0/metrics", "iter_1/metrics"} <= stages
    debates = transcripts(run_dir)
    turns = [u for rows in debates.values() for t in rows for rnd in t["rounds"] for u in rnd]
    generated = [r for r in usage["rows"] if not r["stage"].endswith("/metrics")]
    # every turn, and every summary (written by the base model: summarizer=base), is one request
    assert sum(r["requests"] for r in generated) == len(turns) + sum(u["summary"] is not None for u in turns)
    # at iteration 1 the fine-tuned models speak every turn: their completion tokens are the turns' tokens
    spoken = [r for r in generated if r["stage"] == "iter_1/eval" and r["model"] != "base"]
    assert {r["model"] for r in spoken} == {"generator_0", "generator_1", "generator_2",
                                            "critic_0", "critic_1", "critic_2"}
    assert sum(r["completion_tokens"] for r in spoken) == sum(
        u["num_tokens"] for t in debates["iter_1/eval/transcripts.jsonl"] for rnd in t["rounds"] for u in rnd)
    assert usage["total"]["cost"] is None  # no price table
    from mafl.reporting.report import report_main

    assert "API usage: " in report_main([str(run_dir)])


def test_the_api_key_reaches_no_file_and_no_log(api_run):
    """The key was used (the server refuses requests without it), yet no file of the run, no log and no output
    holds it."""
    files = [p for p in api_run.rglob("*") if p.is_file()]
    assert any(p.name == "results.json" for p in files) and any(p.suffix == ".log" for p in files)
    leaks = [p for p in files if CANARY.encode() in p.read_bytes()]
    assert leaks == []


def test_a_wrong_key_stops_the_run_with_one_line_that_holds_no_key(tmp_path, model, small_tiny_model_dir):
    wrong = "sk-canary-wrong-0d9e8f7a6b5c"
    with mafl_serve(["--model", str(small_tiny_model_dir), "--api-key-env", "MAFL_TEST_SERVER_KEY"], tmp_path / "serve.log",
                    env={"MAFL_TEST_SERVER_KEY": CANARY}) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "mafl", *LOOP, *model, *api(server.url), f"run_dir={tmp_path / 'run'}",
             f"hydra.run.dir={tmp_path / 'hydra'}"], capture_output=True, text=True,
            env=subprocess_env(OPENAI_API_KEY=wrong, OMP_NUM_THREADS="1"), timeout=600)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mafl: backend=openai: ") and server.url in last and " 401 " in last
    assert wrong not in proc.stdout + proc.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and wrong.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_server_that_fails_at_random_gives_the_same_run(hf_run, tmp_path, model, small_tiny_model_dir):
    faults = "429=0.15,500=0.15,drop=0.1,seed=1"
    with mafl_serve(["--model", str(small_tiny_model_dir), "--inject-faults", faults], tmp_path / "serve.log") as server:
        run(compose_cfg(LOOP + model + api(server.url, "backend.max_retries=12") + [f"run_dir={tmp_path / 'run'}"]))
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/faults") as r:
            injected = json.loads(r.read())
    assert min(injected.values()) >= 10, injected  # many of each kind were injected, and the run went on
    assert_same_run(tmp_path / "run", hf_run)


@pytest.mark.slow
def test_a_server_killed_mid_debate_then_restarted_resumes_to_the_same_run(hf_run, tmp_path, model,
                                                                          small_tiny_model_dir):
    run_dir, port = tmp_path / "run", free_port()
    server = ServeProcess(["--model", str(small_tiny_model_dir)], tmp_path / "serve.log", port=port).start()
    first_chunk = run_dir / "iter_0" / "eval" / "chunks" / "chunk_00000.jsonl"

    def kill_after_the_first_chunk():
        deadline = time.time() + 300
        while not first_chunk.exists() and time.time() < deadline:
            time.sleep(0.02)
        server.kill()

    killer = threading.Thread(target=kill_after_the_first_chunk)
    killer.start()
    cfg = compose_cfg(LOOP + model + api(server.url, "backend.max_retries=1", "backend.timeout=20") + [f"run_dir={run_dir}"])
    try:
        with pytest.raises(RunError, match=rf"^backend=openai: no answer from {server.url}"):
            run(cfg)
    finally:
        killer.join()
        server.kill()
    chunks = sorted((run_dir / "iter_0" / "eval" / "chunks").glob("chunk_*.jsonl"))
    assert chunks and not (run_dir / "iter_0" / "eval" / "transcripts.jsonl").exists()  # stopped mid-debate
    kept = {p: p.stat().st_mtime_ns for p in chunks}
    with mafl_serve(["--model", str(small_tiny_model_dir)], tmp_path / "serve2.log", port=port):
        run(cfg)  # the same command
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # the finished chunks were not debated again
    assert_same_run(run_dir, hf_run)
