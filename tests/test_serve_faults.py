"""Faults injected into the real ``mafl serve`` (a subprocess on 127.0.0.1) and what they leave behind: a forward
pass that fails inside a batch (as out of memory would) and a hostile empty prompt leave every later batch right;
bad JSON and wrong shapes get 400s naming the field; ``--max-loras`` unloads the least recently used adapter and
loads it again when asked; a server killed and restarted between two calls is waited for (the retries on the
console) and given back the adapters it lost (the client re-loads on 404); a request's sampling depends on its seed
and its prompt only, not on the requests batched beside it."""
from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

import pytest

from helpers import one_torch_thread
from serving import QUESTION, ServeProcess, api_call, free_port, make_adapters, mafl_serve

pytest.importorskip("openai")
pytest.importorskip("fastapi")

MESSAGES = [{"role": "user", "content": QUESTION}]
ROWS = [[5, 9, 30, 41, 7, 12], [8, 3, 3, 60], [100, 101, 102, 11, 90], [4, 44]]  # token ids of different lengths


@pytest.fixture(scope="module")
def adapters(talking_model_dir, tmp_path_factory) -> dict[str, str]:
    return make_adapters(str(talking_model_dir), ["a", "b"], tmp_path_factory.mktemp("adapters"))


@pytest.fixture(scope="module")
def reference(talking_model_dir, adapters):
    """The in-process backend's answers: prompt log-probabilities of ROWS and greedy chat answers, per model."""
    from mafl.backends.base import GenerationRequest, Sampling
    from mafl.backends.hf import HFBackend

    hf = HFBackend(str(talking_model_dir))
    for name, path in adapters.items():
        hf.load_adapter(name, path)
    greedy = Sampling(temperature=0, max_new_tokens=8)
    with one_torch_thread():  # the server's one thread
        out = {"logprobs": {m: hf.token_logprobs(ROWS, m) for m in (None, "a", "b")},
               "chat": {m: hf.generate([GenerationRequest(MESSAGES, adapter=m, sampling=greedy)])[0].text
                        for m in (None, "a", "b")}}
    hf.close()
    return out


def close_to(got: list, want: list) -> bool:
    return len(got) == len(want) and all((g is None and w is None) or abs(g - w) < 1e-4 for g, w in zip(got, want))


def scored(out: dict, ids: list[int]) -> list:
    entries = out["choices"][0]["prompt_logprobs"]
    return [None] + [e[str(t)]["logprob"] for e, t in zip(entries[1:], ids[1:])]


@pytest.fixture(scope="module")
def clean_server(talking_model_dir, adapters, tmp_path_factory):
    """One adapter in memory at a time (--max-loras 1); batches gathered for 100 ms."""
    with mafl_serve(["--model", str(talking_model_dir), "--max-loras", "1", "--batch-wait-ms", "100"],
                    tmp_path_factory.mktemp("log") / "serve.log") as s:
        for name, path in adapters.items():
            assert api_call(s.url, "/load_lora_adapter", {"lora_name": name, "lora_path": path})[0] == 200
        yield s


def test_a_failing_forward_pass_in_a_batch_leaves_the_next_batches_right(talking_model_dir, adapters, reference,
                                                                          tmp_path):
    """A fifth of the forward passes fail inside the backend (as out of memory would): a request they hit gets a
    500; every other answer, in the same round and every later one, is the in-process backend's (without the fix,
    peft's adapter_names hooks stayed after the first failure and every later batch of another size failed).

    The draws are seeded per forward pass (seed 0 fails the very first one), but which requests share a pass
    depends on timing, and a chat answer of 8 tokens takes 8 passes (it survives 0.8**8 = 17% of the time): so
    the test counts on no share of answers, only that each model's scores were answered again after the first
    failure (all five later rounds failing a model's scores has odds of about 0.2**5)."""
    base = str(talking_model_dir)
    with mafl_serve(["--model", base, "--batch-wait-ms", "100", "--inject-faults", "oom=0.2,seed=0"],
                    tmp_path / "serve.log") as s:
        assert api_call(s.url, "/load_lora_adapter", {"lora_name": "a", "lora_path": adapters["a"]})[0] == 200
        # several rows per batch for each model: peft's stale hooks of a failed one-row call broke such batches
        jobs = ([("score", m, k) for m in ("a", None) for k in range(len(ROWS))]
                + [("chat", m, k) for m in ("a", None) for k in range(3)])

        def send(job):
            kind, model, k = job
            name = model or base
            if kind == "score":
                return api_call(s.url, "/completions", {"model": name, "prompt": ROWS[k], "prompt_logprobs": 1})
            return api_call(s.url, "/chat/completions", {"model": name, "messages": MESSAGES, "temperature": 0,
                                                         "max_tokens": 8})

        rounds = []
        with concurrent.futures.ThreadPoolExecutor(len(jobs) + 1) as pool:
            for _ in range(6):  # every round's requests arrive together: batches of several rows
                hostile = pool.submit(api_call, s.url, "/completions", {"model": "a", "prompt": "", "prompt_logprobs": 1})
                answers = list(pool.map(send, jobs))
                status, out = hostile.result()
                assert status == 400 and out["error"]["message"].startswith("prompt: empty")
                rounds.append(answers)
        faults = api_call(f"http://127.0.0.1:{s.port}", "/faults")[1]
    failed = 0
    for answers in rounds:
        for (kind, model, k), (status, out) in zip(jobs, answers):
            if status == 500:
                assert "injected fault" in out["error"]["message"], out
                failed += 1
                continue
            assert status == 200, out
            if kind == "score":
                assert close_to(scored(out, ROWS[k]), reference["logprobs"][model][k][0]), (model, k)
            else:
                assert out["choices"][0]["message"]["content"] == reference["chat"][model]
    assert faults["oom"] > 0 and failed > 0  # faults happened, and every failure was one of them...
    assert any(st == 500 for st, _ in rounds[0])  # seed 0: the first forward pass fails
    for want in ("a", None):  # ... and each model's scores were answered later (right, as checked above)
        assert any(st == 200 for a in rounds[1:] for (kind, model, _), (st, _) in zip(jobs, a)
                   if kind == "score" and model == want), want


BAD = [  # (path, body or raw bytes, status, the start of the message)
    ("/chat/completions", b"{not json", 400, "the request body is not JSON"),
    ("/chat/completions", b"[1, 2]", 400, "the request body is not a JSON object"),
    ("/chat/completions", {"messages": ["hi"]}, 400, "messages[0]:"),
    ("/chat/completions", {"messages": []}, 400, "messages:"),
    ("/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content:"),
    ("/chat/completions", {"messages": [{"role": "user"}]}, 400, "messages[0].content: missing"),
    ("/chat/completions", {"messages": MESSAGES, "stop": 5}, 400, "stop:"),
    ("/chat/completions", {"messages": MESSAGES, "top_p": 5}, 400, "top_p:"),
    ("/chat/completions", {"messages": MESSAGES, "temperature": -1}, 400, "temperature:"),
    ("/chat/completions", {"messages": MESSAGES, "n": "2"}, 400, "n:"),
    ("/chat/completions", {"messages": MESSAGES, "max_tokens": 0}, 400, "max_tokens:"),
    ("/chat/completions", {"messages": MESSAGES, "logprobs": True}, 400, "logprobs: not supported"),
    ("/chat/completions", {"messages": MESSAGES, "tools": [{"type": "function"}]}, 400, "tools: not supported"),
    ("/chat/completions", {"messages": MESSAGES, "response_format": {"type": "json_object"}}, 400,
     "response_format: not supported"),
    ("/chat/completions", {"messages": MESSAGES, "frequency_penalty": 0.5}, 400, "frequency_penalty: not supported"),
    ("/chat/completions", {"messages": MESSAGES, "model": "nope"}, 404, "The model `nope` does not exist."),
    ("/completions", {"prompt": "", "prompt_logprobs": 1}, 400, "prompt: empty"),
    ("/completions", {"prompt": [], "prompt_logprobs": 1}, 400, "prompt:"),
    ("/completions", {"prompt": [1, 10**9], "prompt_logprobs": 1}, 400, "prompt: token ids"),
    ("/completions", {"prompt": {"a": 1}, "prompt_logprobs": 1}, 400, "prompt:"),
    ("/load_lora_adapter", {"lora_name": "x"}, 400, "lora_name and lora_path are required"),
    ("/load_lora_adapter", {"lora_name": "x", "lora_path": "/nonexistent/adapter"}, 404, "no adapter folder"),
]


def test_bad_json_and_wrong_shapes_get_400s_and_change_nothing(clean_server, talking_model_dir, reference, tmp_path):
    not_an_adapter = tmp_path / "notes"
    not_an_adapter.mkdir()
    (not_an_adapter / "readme.txt").write_text("hello")
    cases = BAD + [("/load_lora_adapter", {"lora_name": "x", "lora_path": str(not_an_adapter)}, 400, "lora_path:")]
    base = str(talking_model_dir)
    for path, body, status, start in cases:
        if isinstance(body, dict):
            body = {"model": base, **body} if path != "/load_lora_adapter" else body
            got, out = api_call(clean_server.url, path, body)
        else:
            got, out = api_call(clean_server.url, path, raw=body)
        assert got == status and out["error"]["message"].startswith(start), (path, body, out)
        assert out["error"]["code"] == status
    # the default values of the refused fields are accepted (clients that send them get what they asked for)
    ok = {"model": base, "messages": MESSAGES, "temperature": 0, "max_tokens": 8, "frequency_penalty": 0,
          "presence_penalty": 0, "logprobs": False, "tools": [], "response_format": {"type": "text"}, "stop": None}
    status, out = api_call(clean_server.url, "/chat/completions", ok)
    assert status == 200 and out["choices"][0]["message"]["content"] == reference["chat"][None]
    assert "x" not in {m["id"] for m in api_call(clean_server.url, "/models")[1]["data"]}


def test_max_loras_unloads_the_least_recently_used_and_loads_it_again(clean_server, reference):
    """--max-loras 1 with two adapters served: each answer is its own adapter's, however they alternate."""
    for model in ("a", "b", "a", "b", "b", "a"):
        status, out = api_call(clean_server.url, "/chat/completions",
                               {"model": model, "messages": MESSAGES, "temperature": 0, "max_tokens": 8})
        assert status == 200 and out["choices"][0]["message"]["content"] == reference["chat"][model], model
    for model in ("b", "a"):
        status, out = api_call(clean_server.url, "/completions", {"model": model, "prompt": ROWS[0], "prompt_logprobs": 1})
        assert status == 200 and close_to(scored(out, ROWS[0]), reference["logprobs"][model][0][0])
    assert {"a", "b"} <= {m["id"] for m in api_call(clean_server.url, "/models")[1]["data"]}


def test_sampling_depends_on_the_seed_and_the_prompt_only(clean_server, talking_model_dir):
    """The same request with seed 7 alone and among 5 others (batched together), and the in-process backend's
    answer for that seed: the same text."""
    from mafl.backends.base import GenerationRequest, Sampling
    from mafl.backends.hf import HFBackend

    base = str(talking_model_dir)
    body = {"model": base, "messages": MESSAGES, "max_tokens": 12, "seed": 7, "temperature": 1.0}
    alone = api_call(clean_server.url, "/chat/completions", body)[1]["choices"][0]["message"]["content"]
    others = [{**body, "seed": s, "messages": [{"role": "user", "content": f"What is {s}+{s}?"}]} for s in range(5)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda b: api_call(clean_server.url, "/chat/completions", b), [*others, body]))
    assert all(st == 200 for st, _ in answers)
    assert answers[-1][1]["choices"][0]["message"]["content"] == alone
    hf = HFBackend(base)
    with one_torch_thread():
        want = hf.generate_seeded([GenerationRequest(MESSAGES, sampling=Sampling(temperature=1.0, max_new_tokens=12))],
                                  [7])
    assert want[0].text == alone
    assert len({a[1]["choices"][0]["message"]["content"] for a in answers}) > 1  # sampled: the seeds differ


def test_a_server_killed_and_restarted_is_waited_for_and_given_its_adapters_back(talking_model_dir, adapters,
                                                                               reference, tmp_path):
    """backend=openai loads adapter a at run time; the server is killed and started again (without a); the next
    call retries (each retry on the console) until the server is back, then re-loads a on its 404."""
    from mafl.backends.base import GenerationRequest, Sampling
    from mafl.backends.openai_api import OpenAIBackend

    port = free_port()
    server = ServeProcess(["--model", str(talking_model_dir)], tmp_path / "serve.log", port=port).start()
    client = OpenAIBackend(str(talking_model_dir), base_url=server.url, max_retries=12, timeout=30)  # ~70 s of back-off
    said: list[str] = []
    client.retries.say = said.append
    greedy = Sampling(temperature=0, max_new_tokens=8)
    requests = [GenerationRequest(MESSAGES, adapter=m, sampling=greedy) for m in ("a", None, "a")]
    restarted = None
    try:
        client.load_adapter("a", adapters["a"])
        assert [c.text for c in client.generate(requests)] == [reference["chat"][m] for m in ("a", None, "a")]
        server.kill()
        restarted = ServeProcess(["--model", str(talking_model_dir)], tmp_path / "serve2.log", port=port)
        starter = threading.Thread(target=restarted.start)
        starter.start()  # the model loads for a few seconds: the first attempts find no server
        got = client.generate(requests)
        starter.join()
        assert [c.text for c in got] == [reference["chat"][m] for m in ("a", None, "a")]
        assert said and all(line.startswith(f"backend=openai: {server.url}: ") and " retry " in line for line in said)
        served = {m["id"]: m for m in api_call(restarted.url, "/models")[1]["data"]}
        assert any(m.get("root") == str(Path(adapters["a"]).resolve()) for m in served.values())  # loaded again
    finally:
        client.close()
        server.kill()
        if restarted is not None:
            restarted.kill()


@pytest.mark.slow
def test_a_sampled_run_killed_3_times_resumes_to_the_uninterrupted_run(talking_model_dir, tmp_path):
    """Sampled debates (T=1) through mafl serve; the run (a process) is SIGKILLed as soon as its 1st, 2nd and 3rd
    debate chunk is on disk, then run to its end: its transcripts and numbers are those of one uninterrupted run of
    the in-process backend (each request's sampling depends on its seed and prompt only)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers import compose_cfg, subprocess_env
    from mafl.pipeline import run
    from test_api_loop import assert_same_run

    small = ["debug=smoke", "logger=none", "dataset.n_train=2", "dataset.n_eval=8", "debate.chunk_size=2",
             "debate.max_new_tokens=16", "finetune.iterations=0", "metrics.diversity_problems=2",
             f"model.path={talking_model_dir}"]
    reference = tmp_path / "hf"
    run(compose_cfg([*small, f"run_dir={reference}"]))
    run_dir = tmp_path / "api"
    chunks = run_dir / "iter_0" / "eval" / "chunks"
    with mafl_serve(["--model", str(talking_model_dir)], tmp_path / "serve.log") as server:
        command = [sys.executable, "-m", "mafl", *small, "backend=openai", f"backend.base_url={server.url}",
                   f"run_dir={run_dir}", f"hydra.run.dir={tmp_path / 'hydra'}"]
        env = subprocess_env(OMP_NUM_THREADS="1")
        for kills in (1, 2, 3):
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            deadline = time.time() + 300
            while len(list(chunks.glob("chunk_*.jsonl"))) < kills and proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL  # killed mid-debate, not finished
        assert not (run_dir / "iter_0" / "eval" / "transcripts.jsonl").exists()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    assert_same_run(run_dir, reference)


def test_the_banner_comes_after_the_port_is_bound(talking_model_dir, tmp_path):
    """A port already taken: mafl serve says so and exits, without announcing an address it does not serve."""
    import socket
    import subprocess
    import sys

    from helpers import subprocess_env

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        proc = subprocess.run([sys.executable, "-m", "mafl", "serve", "--model", str(talking_model_dir), "--port",
                               str(taken.getsockname()[1])], capture_output=True, text=True, timeout=300,
                              env=subprocess_env(OMP_NUM_THREADS="1"))
    assert proc.returncode != 0
    assert "address already in use" in proc.stdout + proc.stderr
    assert "mafl serve: " not in proc.stdout  # no banner
    with mafl_serve(["--model", str(talking_model_dir)], tmp_path / "serve.log") as s:
        assert f"adapter(s) at {s.url}" in (tmp_path / "serve.log").read_text()  # announced once listening


def test_mafl_serve_with_no_folder_serves_the_embedded_default_model(talking_model_dir, tmp_path):
    """No folder, no --model: the default model (model=tiny) from $MAFL_HOME, where `mafl` would find it (a
    random model stands in for the pretrained one in the cache folder of the default recipe)."""
    import shutil

    from helpers import compose_cfg
    from mafl.tiny import RECIPE_FILE, tiny_model_dir

    home = tmp_path / "home"
    cached = tiny_model_dir(dict(compose_cfg([]).model.tiny), home)
    shutil.copytree(talking_model_dir, cached)
    (cached / RECIPE_FILE).write_text("{}")
    with mafl_serve([], tmp_path / "serve.log", env={"MAFL_HOME": str(home)}) as s:
        models = api_call(s.url, "/models")[1]["data"]
        assert [m["id"] for m in models] == [str(cached)]
        status, out = api_call(s.url, "/chat/completions", {"model": str(cached), "messages": MESSAGES,
                                                            "max_tokens": 4, "temperature": 0})
        assert status == 200
