"""backend=openai against a real slow server on 127.0.0.1 that answers one request at a time and finishes the work
of a client that gave up (as a naive server does): the client's timeouts must not pile retries onto it. With more
requests in flight than it answers within the timeout, every request is answered (none of the retries it makes
while the server is busy answering others counts against max_retries), the concurrency comes down to what the
server answers within the timeout, and the server does little more work than the requests themselves (the copies
that timed out are waited for, not sent again at once). Without the gate, each round of retries queued behind the
copies that timed out, timed out again, and the run stopped after max_retries."""
from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time

import pytest

pytest.importorskip("openai")

EACH_S, TIMEOUT_S, REQUESTS = 0.2, 1.0, 24


@contextlib.contextmanager
def slow_server(seconds_each: float):
    """An OpenAI-compatible chat server that answers one request at a time, each after ``seconds_each``; ``state``
    counts the requests it received and the work it did (a request whose client left is worked on all the same)."""
    state = {"received": 0, "done": 0}
    count, one_at_a_time = threading.Lock(), threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            with count:
                state["received"] += 1
            with one_at_a_time:
                time.sleep(seconds_each)
                with count:
                    state["done"] += 1
            text = "echo: " + body["messages"][-1]["content"]
            out = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                           "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
            except OSError:  # the client gave up
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", state
    finally:
        server.shutdown()
        server.server_close()


def test_retries_do_not_pile_onto_a_slow_server(tmp_path, monkeypatch):
    from mafl.backends import retries
    from mafl.backends.base import GenerationRequest, Sampling
    from mafl.backends.openai_api import OpenAIBackend

    # every retry says its line (the console groups those within 2 s: which one is said first depends on timing)
    monkeypatch.setattr(retries, "REPORT_EVERY", 0.0)

    with slow_server(EACH_S) as (url, state):
        client = OpenAIBackend("slow-model", base_url=url, timeout=TIMEOUT_S, max_retries=1, max_concurrency=32)
        said: list[str] = []
        client.retries.say = said.append
        requests = [GenerationRequest([{"role": "user", "content": f"question {k}"}],
                                      sampling=Sampling(temperature=0, max_new_tokens=4)) for k in range(REQUESTS)]
        try:
            got = client.generate(requests)
        finally:
            client.close()
        assert [c.text for c in got] == [f"echo: question {k}" for k in range(REQUESTS)]
        assert client.gate.cuts >= 1 and client.gate.limit <= TIMEOUT_S / EACH_S  # down to what the server answers
        assert said and any("the server is busy answering others" in line and "not counted" in line for line in said)
        # 24 answers; the server was sent few copies beyond them (without waiting for the copies that timed out,
        # each round of retries queued behind them and timed out again)
        assert state["received"] <= 2 * REQUESTS, state
