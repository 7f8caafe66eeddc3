"""A bounded, seeded stream of malformed and hostile requests against the real ``mafl serve`` (a subprocess on
127.0.0.1), interleaved with normal ones, 8 in flight at once: the hostile requests of docs/reliability.md's
table, random JSON shapes, sizes and types in every field, random bodies, bytes, paths and methods, prompts past
the context, bodies past the bound, and large requests whose clients go away. Asserted: no 5xx and no dropped
connection; every normal request answered with a well-formed completion, the one it gets alone (greedy and seeded
sampling alike; the share is printed, at least 99% asserted: float rounding may turn a near-tie); the server's
memory bounded; one console line for each failure, with its request id, and no traceback. The stream stops after
``REQUESTS`` requests or ``BUDGET_S`` seconds."""
from __future__ import annotations

import concurrent.futures
import http.client
import json
import random
import socket
import threading
import time

import pytest

from serving import QUESTION, mafl_serve, rss_mib, server_metrics

pytest.importorskip("fastapi")

SEED, REQUESTS, BUDGET_S, IN_FLIGHT = 36, 1000, 60.0, 8
MAX_BODY = 262144
PROMPTS = [QUESTION, "What is 4*5?", "These are the answers of other agents: Agent 1: The answer is 12.",
           "4*5=20. 7*8=56. 3+20=23."]
FIELDS = ["model", "messages", "n", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed",
          "stop", "stream", "logprobs", "tools", "response_format", "prompt", "prompt_logprobs", "echo", "user",
          "frequency_penalty", "lora_name", "lora_path", "x-unknown"]
PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/load_lora_adapter", "/v1/unload_lora_adapter",
         "/v1/models", "/v1/nope", "/health", "/metrics", "/"]


def random_text(rng: random.Random) -> str:
    size = rng.choice([0, 1, 5, 40, 400, 4000, 40000])
    pool = rng.choice(["digits", "ascii", "unicode", "controls", "surrogates"])
    if pool == "digits":
        return "".join(rng.choice("0123456789") for _ in range(size))
    if pool == "ascii":
        return "".join(chr(rng.randrange(32, 127)) for _ in range(size))
    if pool == "unicode":
        return "".join(chr(rng.choice([rng.randrange(0x80, 0x800), rng.randrange(0x4E00, 0x9FFF),
                                       rng.randrange(0x1F600, 0x1F64F)])) for _ in range(size))
    if pool == "controls":
        return "".join(chr(rng.randrange(0, 32)) for _ in range(size))
    return "".join(chr(rng.randrange(0xD800, 0xE000)) for _ in range(min(size, 50)))  # lone surrogates


def random_json(rng: random.Random, depth: int = 0):
    kinds = ["null", "bool", "int", "big", "float", "special", "str"] + (["list", "dict"] * 2 if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, 1, -1, 2, 7, 16, 17, 1023, 1024, 10 ** 6])
    if kind == "big":
        return rng.choice([2 ** 31, 2 ** 63, 2 ** 64, -2 ** 64, 10 ** 30, 10 ** 300])
    if kind == "float":
        return rng.choice([0.0, 0.5, -0.5, 1e-300, 1e300, 2.5])
    if kind == "special":
        return rng.choice([float("nan"), float("inf"), float("-inf")])
    if kind == "str":
        return random_text(rng)
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.choice([0, 1, 2, 5, 50]))]
    return {rng.choice(FIELDS + ["role", "content", "type", "text"]): random_json(rng, depth + 1)
            for _ in range(rng.choice([0, 1, 3, 8]))}


def normal_request(rng: random.Random, base: str, ids: dict) -> tuple[str, dict]:
    """A request whose answer is known from sending it alone (greedy, or sampled with a seed)."""
    k = rng.randrange(len(PROMPTS))
    kind = rng.choice(["greedy", "greedy", "sampled", "completion", "score"])
    if kind == "score":
        return "/v1/completions", {"model": base, "prompt": ids[k][: rng.choice([4, 12, 30])], "prompt_logprobs": 1}
    if kind == "completion":
        return "/v1/completions", {"model": base, "prompt": ids[k], "temperature": 0, "max_tokens": rng.choice([8, 20])}
    body = {"model": base, "messages": [{"role": "user", "content": PROMPTS[k]}],
            "max_tokens": rng.choice([8, 16, 24])}
    if kind == "greedy":
        return "/v1/chat/completions", {**body, "temperature": 0}
    return "/v1/chat/completions", {**body, "temperature": 1.0, "seed": rng.randrange(5)}


def table(base: str) -> list[tuple[str, str, object]]:
    """(method, path, body) of the issue's hostile requests and the earlier hardening's."""
    normal = {"model": base, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0}
    chat = "/v1/chat/completions"
    return [("POST", chat, {**normal, "n": 100000}),
            ("POST", chat, {**normal, "messages": [{"role": "user", "content": "7" * 1_000_000}]}),  # past the body
            ("POST", chat, {**normal, "messages": [{"role": "user", "content": "7 " * 60_000}]}),  # past the context
            ("POST", chat, {**normal, "messages": [{"role": "user", "content": " ".join("12" for _ in range(700))}]}),
            ("POST", chat, {**normal, "max_tokens": 10 ** 9}),
            ("POST", chat, {**normal, "messages": [{"role": "user"}]}),
            ("POST", chat, {**normal, "seed": 2 ** 64}),
            ("POST", chat, {**normal, "n": 0}), ("POST", chat, {**normal, "max_tokens": -1}),
            ("POST", chat, {**normal, "temperature": -1}), ("POST", chat, {**normal, "top_p": 2}),
            ("POST", chat, {**normal, "seed": "abc"}), ("POST", chat, {**normal, "stream": True}),
            ("POST", chat, {**normal, "messages": "hi"}), ("POST", chat, {**normal, "messages": {"role": "user"}}),
            ("POST", chat, b"{not json"), ("POST", chat, {**normal, "model": "nope"}),
            ("POST", chat, b"[" * 30000 + b"]" * 30000),
            ("POST", "/v1/completions", {"model": base, "prompt": "", "prompt_logprobs": 1}),
            ("POST", "/v1/completions", {"model": base, "prompt": [1, 10 ** 9], "prompt_logprobs": 1}),
            ("POST", "/v1/completions", {"model": base, "prompt": [True, False]}),
            ("POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/nonexistent/" + "a" * 5000}),
            ("POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/tmp"}),
            ("POST", "/v1/unload_lora_adapter", {"lora_name": ["x"]})]


def hostile_request(rng: random.Random, base: str, ids: dict) -> tuple[str, str, object]:
    kind = rng.choice(["table", "table", "field", "field", "field", "body", "bytes", "cut", "path", "prompt"])
    normal = {"model": base, "messages": [{"role": "user", "content": rng.choice(PROMPTS)}], "max_tokens": 8,
              "temperature": 0}
    if kind == "table":
        return rng.choice(table(base))
    if kind == "field":  # a normal request with random values in random fields
        body = dict(normal)
        for _ in range(rng.choice([1, 1, 2, 4])):
            body[rng.choice(FIELDS)] = random_json(rng)
        return "POST", rng.choice(PATHS[:2]), body
    if kind == "body":
        return "POST", rng.choice(PATHS[:4]), random_json(rng)
    if kind == "bytes":
        return "POST", rng.choice(PATHS[:4]), bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 100, 5000])))
    if kind == "cut":
        whole = json.dumps(normal).encode()
        return "POST", PATHS[0], whole[: rng.randrange(len(whole))]
    if kind == "path":
        return rng.choice(["GET", "POST", "PUT", "DELETE"]), rng.choice(PATHS), random_json(rng)
    prompt = rng.choice([ids[0] + [rng.randrange(-5, 10 ** 6)], [rng.randrange(320)] * 1100, [[1, 2]], [1.5, 2],
                         random_text(rng)])
    return "POST", "/v1/completions", {"model": base, "prompt": prompt, "max_tokens": random_json(rng),
                                       **({"prompt_logprobs": 1} if rng.random() < 0.5 else {})}


def send(port: int, method: str, path: str, body, rid: str, timeout: float = 120) -> tuple[int, object]:
    """(status, parsed body or text); status 0 with the error's name for a dropped connection."""
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers={"content-type": "application/json", "x-request-id": rid})
        r = conn.getresponse()
        status, text = r.status, r.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as e:
        return 0, f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def abandoned(port: int, base: str, rid: str) -> tuple[int, object]:
    """A large legal request (16 completions filling the context) whose client goes away after 0.3 s."""
    body = json.dumps({"model": base, "messages": [{"role": "user", "content": QUESTION}], "n": 16,
                       "temperature": 1.0, "seed": 3}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Request-Id: "
                  + rid.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.3)
    return -1, "abandoned"


def well_formed(path: str, body: dict, out) -> str | list | None:
    """The answer's text (or its prompt log-probabilities), or None when it is not a well-formed one."""
    try:
        choice = out["choices"][0]
        assert out["object"] in ("chat.completion", "text_completion") and len(out["choices"]) == 1
        assert choice["finish_reason"] in ("stop", "length")
        usage = out["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        if "prompt_logprobs" in body:
            return [None if e is None else next(iter(e.values()))["logprob"] for e in choice["prompt_logprobs"]]
        text = choice["message"]["content"] if path.endswith("chat/completions") else choice["text"]
        assert isinstance(text, str) and usage["completion_tokens"] <= body["max_tokens"]
        return text
    except (AssertionError, KeyError, TypeError, IndexError, StopIteration):
        return None


def alike(got, want) -> bool:
    """The same text, or the same log-probabilities up to float rounding (a row scored beside others is padded)."""
    if isinstance(want, list):
        return len(got) == len(want) and all(g == w or abs(g - w) < 1e-4 for g, w in zip(got, want))
    return got == want


def test_a_seeded_stream_of_hostile_requests_leaves_every_normal_one_right(talking_model_dir, tmp_path):
    from mafl.backends import chat
    from mafl.models import load_tokenizer

    base = str(talking_model_dir)
    tok = load_tokenizer(base)
    ids = {k: chat.prompt_ids(tok, [{"role": "user", "content": p}]) for k, p in enumerate(PROMPTS)}
    rng = random.Random(SEED)
    plan = []  # (request id, kind, method, path, body)
    for i in range(REQUESTS):
        r = rng.random()
        if r < 0.35:
            path, body = normal_request(rng, base, ids)
            plan.append((f"fz-{i}", "normal", "POST", path, body))
        elif r < 0.37:
            plan.append((f"fz-{i}", "abandoned", "POST", "/v1/chat/completions", None))
        else:
            plan.append((f"fz-{i}", "hostile", *hostile_request(rng, base, ids)))
    log = tmp_path / "serve.log"
    with mafl_serve(["--model", base, "--max-body-bytes", str(MAX_BODY), "--slice-tokens", "16"], log) as s:
        alone = {}
        for rid, kind, method, path, body in plan:  # each normal request's answer alone, one at a time
            key = json.dumps([path, body], sort_keys=True) if kind == "normal" else None
            if kind == "normal" and key not in alone:
                status, out = send(s.port, method, path, body, f"alone-{len(alone)}")
                assert status == 200, out
                alone[key] = well_formed(path, body, out)
                assert alone[key] is not None, out
        rss_before = rss_mib(s.proc.pid)
        peak, results, lock = [rss_before], {}, threading.Lock()
        start = time.monotonic()

        def one(item):
            rid, kind, method, path, body = item
            if time.monotonic() - start > BUDGET_S:
                return
            got = abandoned(s.port, base, rid) if kind == "abandoned" else send(s.port, method, path, body, rid)
            with lock:
                results[rid] = got
                if len(results) % 40 == 0:
                    peak.append(rss_mib(s.proc.pid))

        with concurrent.futures.ThreadPoolExecutor(IN_FLIGHT) as pool:
            list(pool.map(one, plan))
        wall = time.monotonic() - start
        time.sleep(0.5)  # the last lines reach the log
        rss_after = rss_mib(s.proc.pid)
        metrics = server_metrics(s.port)
    console = log.read_text()
    lines = console.splitlines()
    statuses: dict[int, int] = {}
    same = normal = 0
    for rid, kind, method, path, body in plan:
        if rid not in results:
            continue  # past the time budget
        status, out = results[rid]
        statuses[status] = statuses.get(status, 0) + 1
        assert status == -1 or 100 <= status < 500, (rid, method, path, str(body)[:300], status, str(out)[:300])
        if kind == "normal":
            normal += 1
            assert status == 200, (rid, path, body, out)
            text = well_formed(path, body, out)
            assert text is not None, (rid, out)
            same += alike(text, alone[json.dumps([path, body], sort_keys=True)])
        mine = [line for line in lines if f" {rid} " in line]
        if kind == "hostile":
            assert len(mine) == (1 if status >= 400 else 0), (rid, status, mine)
            if status >= 400:
                assert mine[0].startswith(f"mafl serve: {rid} {status} "), mine
    print(f"\nfuzz: {len(results)} of {len(plan)} requests in {wall:.1f} s ({IN_FLIGHT} in flight); statuses "
          f"{dict(sorted(statuses.items()))} (-1: abandoned); normal answers the same as alone: {same} of {normal}; "
          f"server RSS {rss_before:.0f} MiB before, peak {max(peak):.0f}, after {rss_after:.0f}; units cancelled "
          f"{metrics['units_cancelled']}, slices given way {metrics['slices_yielded']}")
    assert len(results) >= 100 and normal >= 30  # the budget let a real stream through
    # greedy and seeded answers are those each request gets alone; batched beside others (padded) or continued in
    # a slice, a row's logits may differ in the last float bits, which can turn a near-tie: at most 1 in 100 may
    # differ (none did in the runs measured: docs/reliability.md)
    assert same >= normal * 0.99, (same, normal)
    assert "Traceback" not in console and not any(line.startswith((" ", "\t")) for line in lines)
    assert max(peak + [rss_after]) < rss_before + 200, (rss_before, peak, rss_after)
