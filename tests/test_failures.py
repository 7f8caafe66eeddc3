"""Every failure a user meets ends in one line that names the culprit (file and row, key, server) and says what to
do, printed once, with the earlier work of the run folder kept; ``verbose=true`` keeps the traceback. A stage file
cut short is made again (a warning names it), leftovers of a killed run are removed on resume, keys that only say
how a run works may change on resume, and a hung server holds a run for a bounded time with every retry shown.
The commands run as a user runs them (``python -m mafl``), against real servers on 127.0.0.1."""
from __future__ import annotations

import contextlib
import http.server
import json
import logging
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import compose_cfg, subprocess_env

SMALL = ["debug=smoke", "logger=none", "dataset.n_train=2", "dataset.n_eval=2", "debate.max_new_tokens=8",
         "finetune.iterations=0", "metrics.diversity_problems=2"]
ROWS = [{"question": f"What is {k}+{k}?", "answer": str(2 * k)} for k in range(4)]


def mafl(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    # Hydra's own output folder (runs/<overrides>), short: the run's files go to run_dir
    return subprocess.run([sys.executable, "-m", "mafl", *args, f"hydra.run.dir={cwd / 'hydra'}"], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=subprocess_env(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", **env))


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def earlier_work(run_dir: Path, overrides: list[str]) -> dict[Path, bytes]:
    """A run folder as an earlier run of the same command left it: its config and a finished debate chunk."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(compose_cfg(overrides), resolve=True))
    chunk = run_dir / "iter_0" / "eval" / "chunks" / "chunk_00000.jsonl"
    chunk.parent.mkdir(parents=True)
    chunk.write_text('{"kept": true}\n')
    return {p: p.read_bytes() for p in (run_dir / "config.yaml", chunk)}


def assert_one_line(proc: subprocess.CompletedProcess, *parts: str) -> str:
    """The command failed with exactly one line on stderr, naming every part, and did not print it twice."""
    assert proc.returncode in (1, 2), proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("mafl"), line
    for part in parts:
        assert part in line, (part, line)
    assert line.split(": ", 1)[1] not in proc.stdout  # printed once
    return line


@contextlib.contextmanager
def answering(body: bytes, content_type: str):
    """An HTTP server on 127.0.0.1 that answers every POST with 200 and ``body`` (a server that is not an
    OpenAI-compatible one, or a broken one)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def hung():
    """A server on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join()
        for s in held:
            s.close()
        listener.close()


DATA_CASES = {  # name: (lines of the eval file, what the line names)
    "bad_json": ([ROWS[0], '{"question": "1+1?", '], ":2: invalid JSON"),
    "missing_field": ([{"question": "1+1?"}], ":1: field 'answer': missing"),
    "not_an_object": ([ROWS[0], [1, 2]], ":2: a row must be a JSON object"),
    "no_rows": ([], ": no rows"),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_a_bad_dataset_file_is_one_line_naming_the_file_and_row(case, talking_model_dir, tmp_path):
    lines, named = DATA_CASES[case]
    train = write_jsonl(tmp_path / "train.jsonl", ROWS)
    bad = write_jsonl(tmp_path / "eval.jsonl", lines)
    run_dir = tmp_path / "run"
    overrides = [*SMALL, f"model.path={talking_model_dir}", "dataset=jsonl", f"dataset.train_file={train}",
                 f"dataset.eval_file={bad}", f"run_dir={run_dir}"]
    kept = earlier_work(run_dir, overrides)
    assert_one_line(mafl(overrides, tmp_path), f"{bad}{named}")
    assert {p: p.read_bytes() for p in kept} == kept


def test_verbose_keeps_the_traceback(talking_model_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ROWS)
    bad = write_jsonl(tmp_path / "eval.jsonl", [ROWS[0], "not json"])
    proc = mafl([*SMALL, f"model.path={talking_model_dir}", "dataset=jsonl", f"dataset.train_file={train}",
                 f"dataset.eval_file={bad}", f"run_dir={tmp_path / 'run'}", "verbose=true"], tmp_path)
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mafl: ") and f"{bad}:2: invalid JSON" in last
    assert proc.stderr.count(f"mafl: {bad}:2") == 1


@pytest.mark.parametrize("model", ["empty_folder", "unknown_hub_name"])
def test_a_model_that_is_not_there_is_one_line_naming_the_key(model, tmp_path):
    path = str(tmp_path / "no_model") if model == "empty_folder" else "some-org/no-such-model-xyz"
    Path(path).mkdir() if model == "empty_folder" else None
    run_dir = tmp_path / "run"
    overrides = [*SMALL, f"model.path={path}", f"run_dir={run_dir}"]
    if model == "unknown_hub_name":  # the config is valid (a hub name): an earlier run may have saved it
        kept = earlier_work(run_dir, overrides)
    line = assert_one_line(mafl(overrides, tmp_path), "model.path: ", path)
    assert ("holds no model (no config.json" if model == "empty_folder" else "Hugging Face hub") in line
    assert "sentencepiece" not in line and "tiktoken" not in line
    if model == "unknown_hub_name":
        assert {p: p.read_bytes() for p in kept} == kept


@pytest.mark.parametrize("answer", ["no_choices", "html"])
def test_a_server_that_is_not_openai_compatible_is_one_line_naming_it(answer, talking_model_dir, tmp_path):
    body, kind = ((json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                               "choices": []}).encode(), "application/json") if answer == "no_choices"
                  else (b"<html><body>Welcome to nginx!</body></html>", "text/html"))
    with answering(body, kind) as url:
        run_dir = tmp_path / "run"
        overrides = [*SMALL, f"model.path={talking_model_dir}", "backend=openai", f"backend.base_url={url}",
                     f"run_dir={run_dir}"]
        kept = earlier_work(run_dir, overrides)
        line = assert_one_line(mafl(overrides, tmp_path), f"backend=openai: {url} answered", "with no choice")
    assert ("choices: []" if answer == "no_choices" else "Welcome to nginx") in line
    assert {p: p.read_bytes() for p in kept} == kept


def test_mafl_serve_with_a_missing_model_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mafl", "serve", "--model", "/nonexistent/model"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=subprocess_env(OMP_NUM_THREADS="1"))
    assert proc.returncode == 2 and proc.stderr.strip() == "mafl serve: --model: no such folder /nonexistent/model"


def test_a_hung_server_stops_the_run_in_bounded_time_with_the_retries_shown(talking_model_dir, tmp_path):
    """Each attempt waits backend.timeout, each retry is a line on the console, the end is one line; the same
    folder resumed with another timeout and retries is the same run (those keys only say how it works)."""
    run_dir = tmp_path / "run"
    with hung() as url:
        base = [*SMALL, f"model.path={talking_model_dir}", "backend=openai", f"backend.base_url={url}",
                f"run_dir={run_dir}"]
        first = mafl([*base, "backend.timeout=1", "backend.max_retries=2"], tmp_path)
        assert_one_line(first, f"backend=openai: no answer from {url}", "after 2 retries", "the same command resumes")
        assert f"backend=openai: {url}: APITimeoutError on a chat completion request; at most" in first.stdout
        assert "requests in flight now; retry 1 of 2 in" in first.stdout  # a silent server: the retries count
        again = mafl([*base, "backend.timeout=0.5", "backend.max_retries=1", "backend.max_concurrency=4"], tmp_path)
        assert_one_line(again, f"backend=openai: no answer from {url}", "after 1 retries")
    assert (run_dir / "config.yaml").exists()


def test_result_defining_keys_cannot_change_on_resume_and_operational_ones_can(tmp_path):
    from mafl.errors import ConfigError
    from mafl.pipeline import prepare_run_dir

    run_dir = tmp_path / "run"
    base = ["backend=openai", "backend.base_url=http://127.0.0.1:1/v1", f"run_dir={run_dir}"]
    prepare_run_dir(compose_cfg(base), run_dir)
    prepare_run_dir(compose_cfg([*base[:1], "backend.base_url=http://127.0.0.1:2/v1", base[2], "backend.timeout=30",
                                 "backend.max_retries=9", "backend.max_concurrency=8", "finetune.resources.num_cpus=2",
                                 "finetune.max_retries=5", "verbose=true"]), run_dir)
    assert "timeout: 30" in (run_dir / "config.yaml").read_text()  # the config saved is the latest one
    chunk = run_dir / "iter_0" / "eval" / "chunks" / "chunk_00000.jsonl"  # work done: the run is this config's
    chunk.parent.mkdir(parents=True)
    chunk.write_text("{}\n")
    for key in ("debate.rounds=3", "debate.temperature=0.5", "seed=1", "+backend.extra_body.top_k=3"):
        with pytest.raises(ConfigError, match=rf"^{key.split('=')[0].lstrip('+')}: differs from the run already in"):
            prepare_run_dir(compose_cfg([*base, key]), run_dir)


def test_stage_files_cut_short_are_made_again_and_leftovers_removed(talking_model_dir, tmp_path, caplog):
    from mafl.pipeline import run

    run_dir = tmp_path / "run"
    cfg = compose_cfg([*SMALL, "dataset.n_eval=4", "debate.chunk_size=2", f"model.path={talking_model_dir}",
                       f"run_dir={run_dir}"])
    run(cfg)
    want = json.loads((run_dir / "results.json").read_text())["records"]
    eval_dir = run_dir / "iter_0" / "eval"
    kept = eval_dir / "chunks" / "chunk_00000.jsonl"
    kept_time = kept.stat().st_mtime_ns
    cut = {p: p.read_text() for p in (eval_dir / "transcripts.jsonl", eval_dir / "chunks" / "chunk_00001.jsonl",
                                      eval_dir / "metrics.json")}
    for path, text in cut.items():
        path.write_text(text[: len(text) // 2])
    leftovers = [eval_dir / ".metrics.json.abc123.tmp", run_dir / "iter_1" / "models" / ".generator_0.trainer-x1y2"]
    leftovers[0].write_text("{")
    (leftovers[1] / "checkpoint-5").mkdir(parents=True)
    (leftovers[1] / "checkpoint-5" / "model.safetensors").write_bytes(b"0" * 1000)
    with caplog.at_level(logging.WARNING, logger="mafl"):
        run(cfg)
    warned = [r.getMessage() for r in caplog.records if "does not parse" in r.getMessage()]
    assert {w.split(" does not parse")[0] for w in warned} == {str(p) for p in cut}
    assert all(len(w.splitlines()) == 1 for w in warned)
    assert {p: p.read_text() for p in cut} == cut  # made again: the same as before
    assert json.loads((run_dir / "results.json").read_text())["records"] == want
    assert kept.stat().st_mtime_ns == kept_time  # the whole chunk was not debated again
    assert not any(p.exists() for p in leftovers)
