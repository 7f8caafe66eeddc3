"""The limits of the real ``mafl serve`` (a subprocess on 127.0.0.1), checked before any work: the context (prompt
+ max_tokens, a 400 naming both numbers; no max_tokens: what fits), ``--max-n``, ``--max-body-bytes`` (413, by
Content-Length and while a chunked body streams in), every message's content, the seed's range (the connection
stays usable); one console line per failure; a request sent behind a long one waits for at most one slice of it;
a client that goes away has its work cancelled."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from serving import QUESTION, api_call, mafl_serve, server_metrics

pytest.importorskip("fastapi")

MESSAGES = [{"role": "user", "content": QUESTION}]
CONTEXT, MAX_N, MAX_BODY, SLICE = 128, 4, 65536, 16


@pytest.fixture(scope="module")
def small(talking_model_dir, tmp_path_factory):
    """A server with a small context, n cap and body bound."""
    log = tmp_path_factory.mktemp("log") / "serve.log"
    with mafl_serve(["--model", str(talking_model_dir), "--max-model-len", str(CONTEXT), "--max-n", str(MAX_N),
                     "--max-body-bytes", str(MAX_BODY), "--slice-tokens", str(SLICE)], log) as s:
        s.log_path = log
        yield s


@pytest.fixture(scope="module")
def prompt_tokens(talking_model_dir) -> int:
    from mafl.backends import chat
    from mafl.models import load_tokenizer

    return len(chat.prompt_ids(load_tokenizer(str(talking_model_dir)), MESSAGES))


def post(port: int, path: str, body, conn=None, headers=None):
    """(status, parsed body) of a POST on ``conn`` (keep-alive) or a new connection."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    data = body if isinstance(body, (bytes, bytearray)) or hasattr(body, "__next__") else json.dumps(body).encode()
    conn.request("POST", f"/v1{path}", body=data, headers={"content-type": "application/json", **(headers or {})},
                 encode_chunked=hasattr(body, "__next__"))
    r = conn.getresponse()
    text = r.read().decode()
    if own:
        conn.close()
    return r.status, json.loads(text)


def test_the_context_bounds_prompt_and_max_tokens_with_both_numbers_named(small, talking_model_dir, prompt_tokens):
    base = str(talking_model_dir)
    ok = {"model": base, "messages": MESSAGES, "temperature": 0}
    status, out = post(small.port, "/chat/completions", {**ok, "max_tokens": 10 ** 9})
    assert status == 400 and out["error"]["message"].startswith("max_tokens:")
    assert f"{CONTEXT} tokens" in out["error"]["message"]
    assert f"{prompt_tokens + 10 ** 9} tokens ({prompt_tokens} in the prompt, {10 ** 9} in the completion)" in \
        out["error"]["message"]
    fits = CONTEXT - prompt_tokens
    assert post(small.port, "/chat/completions", {**ok, "max_tokens": fits})[0] == 200
    assert post(small.port, "/chat/completions", {**ok, "max_tokens": fits + 1})[0] == 400
    # no max_tokens: what the prompt leaves of the context
    status, out = post(small.port, "/chat/completions", ok)
    assert status == 200
    choice, used = out["choices"][0], out["usage"]["completion_tokens"]
    assert used <= fits and (choice["finish_reason"] == "stop" or used == fits)
    # a prompt longer than the context: by its tokens, and (past what any tokens could hold) by its bytes
    long_text = " ".join(str(k % 10) for k in range(200))
    status, out = post(small.port, "/chat/completions", {**ok, "messages": [{"role": "user", "content": long_text}]})
    assert status == 400 and out["error"]["message"].startswith("messages:") and str(CONTEXT) in out["error"]["message"]
    status, out = post(small.port, "/chat/completions", {**ok, "messages": [{"role": "user", "content": "7" * 60000}]})
    assert status == 400 and "bytes of text cannot fit this model's maximum context length of 128" in \
        out["error"]["message"]
    status, out = post(small.port, "/completions", {"model": base, "prompt": [5] * (CONTEXT + 1), "prompt_logprobs": 1})
    assert status == 400 and out["error"]["message"].startswith("prompt:")


def test_n_messages_and_the_seed_are_checked_and_the_connection_stays_usable(small, talking_model_dir):
    base = str(talking_model_dir)
    ok = {"model": base, "messages": MESSAGES, "temperature": 0, "max_tokens": 6}
    want = post(small.port, "/chat/completions", ok)[1]["choices"][0]["message"]["content"]
    conn = http.client.HTTPConnection("127.0.0.1", small.port, timeout=120)
    for bad, start in (({"n": MAX_N + 1}, "n: must be <= 4"), ({"n": 100000}, "n: must be <= 4"),
                       ({"seed": 2 ** 64}, "seed: must be <="), ({"seed": -2 ** 63 - 1}, "seed: must be >="),
                       ({"messages": [{"role": "user"}]}, "messages[0].content: missing"),
                       ({"messages": [{"role": "user", "content": None}]}, "messages[0].content: missing"),
                       ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content:"),
                       ({"temperature": float("nan")}, "temperature:")):
        status, out = post(small.port, "/chat/completions", {**ok, **bad}, conn)
        assert status == 400 and out["error"]["message"].startswith(start), (bad, out)
        status, out = post(small.port, "/chat/completions", ok, conn)  # the same connection, answered right
        assert status == 200 and out["choices"][0]["message"]["content"] == want
    conn.close()
    parts = [{"type": "text", "text": QUESTION[:20]}, {"type": "text", "text": QUESTION[20:]}]
    status, out = post(small.port, "/chat/completions", {**ok, "messages": [{"role": "user", "content": parts}]})
    assert status == 200 and out["choices"][0]["message"]["content"] == want
    status, out = post(small.port, "/chat/completions", {**ok, "seed": 2 ** 63 - 1, "temperature": 1.0})
    assert status == 200


def test_a_body_past_the_bound_gets_a_413_before_it_is_parsed(small, talking_model_dir):
    base = str(talking_model_dir)
    ok = {"model": base, "messages": MESSAGES, "temperature": 0, "max_tokens": 4}
    big = json.dumps({**ok, "padding": "x" * MAX_BODY}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", small.port, timeout=120)
    status, out = post(small.port, "/chat/completions", big, conn)  # Content-Length past the bound
    assert status == 413 and "--max-body-bytes" in out["error"]["message"] and str(len(big)) in out["error"]["message"]
    assert post(small.port, "/chat/completions", ok, conn)[0] == 200  # read to its end: the connection goes on
    conn.close()
    chunks = iter([big[k:k + 4096] for k in range(0, len(big), 4096)])  # no Content-Length: counted as it streams
    status, out = post(small.port, "/chat/completions", chunks)
    assert status == 413
    # a Content-Length far past the bound and a client that stops sending: answered, nothing waited for
    with socket.create_connection(("127.0.0.1", small.port), timeout=30) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Expect: 100-continue\r\nContent-Length: 10000000000\r\n\r\n")
        assert s.recv(65536).split(b"\r\n", 1)[0] == b"HTTP/1.1 413 Request Entity Too Large"
    status, out = post(small.port, "/chat/completions", b"[" * 20000 + b"]" * 20000)  # nested past recursion
    assert status == 400 and out["error"]["message"] == "the request body is not JSON"


def test_every_failure_is_one_console_line_with_its_request_id(small, talking_model_dir):
    base = str(talking_model_dir)
    cases = {"fail-a": ({"model": base, "messages": MESSAGES, "n": 99}, 400),
             "fail-b": ({"model": "nope", "messages": MESSAGES}, 404),
             "fail-c": (b"{not json", 400),
             "ok-d": ({"model": base, "messages": MESSAGES, "max_tokens": 2}, 200)}
    for rid, (body, want) in cases.items():
        status, _ = post(small.port, "/chat/completions", body, headers={"x-request-id": rid})
        assert status == want
    time.sleep(0.2)  # the server writes its line after the answer
    lines = small.log_path.read_text().splitlines()
    for rid, (_, want) in cases.items():
        mine = [line for line in lines if f" {rid} " in line]
        assert len(mine) == (0 if want == 200 else 1), (rid, mine)
        if want != 200:
            assert mine[0].startswith(f"mafl serve: {rid} {want} POST /v1/chat/completions: ")
    assert "Traceback" not in small.log_path.read_text()


@pytest.fixture(scope="module")
def sliced(talking_model_dir, tmp_path_factory):
    """The model's whole context (1,024), slices of 16 steps."""
    with mafl_serve(["--model", str(talking_model_dir), "--slice-tokens", str(SLICE)],
                    tmp_path_factory.mktemp("log") / "serve.log") as s:
        yield s


LONG = {"messages": MESSAGES, "temperature": 0, "max_tokens": 600}


def wait_until(condition, what: str, seconds: float = 120):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.01)


def test_a_request_behind_a_long_one_waits_at_most_one_slice(sliced, talking_model_dir):
    """A long request (16 greedy completions of 600 tokens) is running; a short one sent then is answered with
    its own text while the long one still runs, having waited behind at most one slice (16 steps) of it."""
    base = str(talking_model_dir)
    alone = post(sliced.port, "/chat/completions", {**LONG, "model": base, "n": 1})[1]
    assert alone["choices"][0]["finish_reason"] == "length"  # the long request really runs 600 steps
    short = {"model": base, "messages": [{"role": "user", "content": "What is 4*5?"}], "temperature": 0,
             "max_tokens": 8}
    want = post(sliced.port, "/chat/completions", short)[1]["choices"][0]["message"]["content"]
    before = server_metrics(sliced.port)
    long_answer: dict = {}
    sender = threading.Thread(target=lambda: long_answer.update(
        out=post(sliced.port, "/chat/completions", {**LONG, "model": base, "n": 16})))
    sender.start()
    wait_until(lambda: server_metrics(sliced.port)["units_running"] == 16, "the long request never ran")
    status, out = post(sliced.port, "/chat/completions", short)
    still_running = sender.is_alive()
    metrics = server_metrics(sliced.port)
    sender.join()
    assert status == 200 and out["choices"][0]["message"]["content"] == want
    assert still_running  # answered while the long request ran...
    assert metrics["max_wait_steps"] <= SLICE  # ...after at most one slice of it
    assert metrics["slices_yielded"] > before["slices_yielded"]
    status, out = long_answer["out"]
    assert status == 200 and [c["message"]["content"] for c in out["choices"]] == \
        [alone["choices"][0]["message"]["content"]] * 16  # sliced, the long answers are those it gives alone


def test_a_client_that_goes_away_has_its_work_cancelled(sliced, talking_model_dir):
    base = str(talking_model_dir)
    before = server_metrics(sliced.port)
    with socket.create_connection(("127.0.0.1", sliced.port), timeout=30) as s:
        body = json.dumps({**LONG, "model": base, "n": 8}).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        wait_until(lambda: server_metrics(sliced.port)["units_running"] == 8, "the request never ran")
    # the client is gone: its 8 completions are dropped well before their 600 steps
    wait_until(lambda: server_metrics(sliced.port)["units_running"] == 0, "the work was not cancelled")
    after = server_metrics(sliced.port)
    assert after["units_cancelled"] - before["units_cancelled"] == 8
    assert after["steps"] - before["steps"] < 600
    status, _ = api_call(sliced.url, "/chat/completions", {"model": base, "messages": MESSAGES, "max_tokens": 4})
    assert status == 200


def test_the_limits_flags_are_checked(talking_model_dir):
    import subprocess
    import sys

    from helpers import subprocess_env

    for flags, said in ((["--max-n", "0"], "mafl serve: --max-n: must be >= 1 (got 0)"),
                        (["--max-body-bytes", "-5"], "mafl serve: --max-body-bytes: must be >= 1 (got -5)"),
                        (["--max-model-len", "5000"], "mafl serve: --max-model-len: 5000 is more than the model's 1024 "
                                                      "positions")):
        out = subprocess.run([sys.executable, "-m", "mafl", "serve", "--model", str(talking_model_dir), *flags],
                             capture_output=True, text=True, timeout=300, env=subprocess_env(OMP_NUM_THREADS="1"))
        assert out.returncode == 2 and out.stderr.strip().splitlines()[-1] == said, out.stderr


def test_messages_the_chat_template_refuses_are_a_400(talking_model_dir, tmp_path):
    """A model whose chat template raises for some messages (as Mistral's does for roles out of order): a 400
    quoting it, and the next request answered."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(talking_model_dir, model)
    template = model / "chat_template.jinja"
    template.write_text("{% for m in messages %}{% if m['role'] == 'robot' %}{{ raise_exception('robots may not "
                        "speak') }}{% endif %}{% endfor %}" + template.read_text())
    with mafl_serve(["--model", str(model)], tmp_path / "serve.log") as s:
        status, out = post(s.port, "/chat/completions", {"model": str(model), "max_tokens": 4,
                                                          "messages": [{"role": "robot", "content": "hi"}]})
        assert status == 400 and out["error"]["message"].startswith("messages: the model's chat template cannot "
                                                                     "render them")
        assert "robots may not speak" in out["error"]["message"]
        assert post(s.port, "/chat/completions", {"model": str(model), "max_tokens": 4, "messages": MESSAGES})[0] == 200
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
