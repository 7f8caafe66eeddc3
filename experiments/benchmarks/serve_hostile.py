"""The hostile requests of docs/reliability.md against `mafl serve` (a subprocess on 127.0.0.1), each followed by
a normal request: the hostile one's status and time, the time to answer the next normal request (against the same
request alone), and the server's resident memory before and after.

    python experiments/benchmarks/serve_hostile.py [--model-path FOLDER] [--slice-tokens 128]

Without ``--model-path`` the model is a small random Llama with mafl's tokenizer (tests/conftest.py, 1,024
positions), built here in seconds. A request that may run long (a large legal one) is sent from a thread, and the
normal request follows 0.5 s later, while it runs.
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))
sys.path.insert(0, str(HERE))

QUESTION = "What is the result of 3+4*5+6-7*8? Make sure to state your answer at the end of the response."


def post(port: int, path: str, body, conn: http.client.HTTPConnection | None = None, timeout: float = 300):
    """(status, seconds, parsed body or text) of one POST (on ``conn`` if given: keep-alive)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    start = time.perf_counter()
    try:
        conn.request("POST", f"/v1{path}", body=data, headers={"content-type": "application/json"})
        r = conn.getresponse()
        text = r.read().decode("utf-8", "replace")
        status = r.status
    except (OSError, http.client.HTTPException) as e:
        status, text = 0, f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - start
    if own:
        conn.close()
    try:
        return status, seconds, json.loads(text)
    except ValueError:
        return status, seconds, text


def cases(base: str) -> list[tuple[str, object, bool]]:
    """(what, body, sent from a thread because it may run long)."""
    normal = {"model": base, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0}
    return [
        ('"n": 100000', {**normal, "n": 100000}, False),
        ("a 1 MB prompt of digits", {**normal, "messages": [{"role": "user", "content": "7" * 1_000_000}]}, False),
        ("a 10 MB prompt", {**normal, "messages": [{"role": "user", "content": "What is 3+4? " * 800_000}]}, False),
        ('"max_tokens": 10**9 (greedy)', {**normal, "max_tokens": 10 ** 9}, False),
        ("a message without content", {**normal, "messages": [{"role": "user"}]}, False),
        ('"seed": 2**64', {**normal, "seed": 2 ** 64, "max_tokens": 8}, False),
        ('JSON nested 100,000 deep', b"[" * 100_000 + b"]" * 100_000, False),
        ("the largest legal request: n=16, no max_tokens (fills the context)",
         {**normal, "n": 16, "temperature": 1.0, "seed": 1}, True),
        ("the same, its client gone after 0.5 s", {**normal, "n": 16, "temperature": 1.0, "seed": 1}, "abandon"),
    ]


def abandon(port: int, body: dict) -> tuple[int, float, str]:
    """Send ``body`` and close the connection 0.5 s later, without reading an answer."""
    import socket

    data = json.dumps(body).encode()
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        time.sleep(0.5)
    return -1, time.perf_counter() - start, "gone"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--slice-tokens", type=int, default=128)
    ap.add_argument("--normal-tokens", type=int, default=64, help="max_tokens of the normal request")
    args = ap.parse_args()

    from conftest import make_random_model
    from serve_load import rss_mb
    from serving import mafl_serve, server_metrics

    work = Path(tempfile.mkdtemp(prefix="mafl-serve-hostile-"))
    base = args.model_path or str(make_random_model(work / "model", tie=False))
    log = work / "serve.log"
    normal = {"model": base, "messages": [{"role": "user", "content": QUESTION}], "temperature": 0,
              "max_tokens": args.normal_tokens}
    rows = []
    with mafl_serve(["--model", base, "--slice-tokens", str(args.slice_tokens)], log) as server:
        port, pid = server.port, server.proc.pid
        post(port, "/chat/completions", normal)  # warm-up
        alone = sorted(post(port, "/chat/completions", normal)[1] for _ in range(3))[1]
        want = post(port, "/chat/completions", normal)[2]["choices"][0]["message"]["content"]
        steps_before, yielded_before = server_metrics(port)["steps"], server_metrics(port)["slices_yielded"]
        for what, body, long in cases(base):
            before = rss_mb(pid)
            got: dict = {}
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

            def send():
                if long == "abandon":
                    got["status"], got["seconds"], got["out"] = abandon(port, body)
                else:
                    got["status"], got["seconds"], got["out"] = post(port, "/chat/completions", body, conn)
            sender = threading.Thread(target=send)
            sender.start()
            if long:
                time.sleep(0.6)  # it runs (or its client has gone)
            if long != True:  # noqa: E712 - sent from a thread only to be answered later
                sender.join()
            status, seconds, out = post(port, "/chat/completions", normal,
                                        None if long else conn)  # the same connection where the first ended
            same = status == 200 and out["choices"][0]["message"]["content"] == want
            sender.join()
            conn.close()
            message = got["out"]["error"]["message"] if isinstance(got["out"], dict) and "error" in got["out"] else ""
            if long:
                counts = server_metrics(port)
                message = (f"the server ran {counts['steps'] - steps_before} decode steps meanwhile; the batch gave "
                           f"way {counts['slices_yielded'] - yielded_before} times; units cancelled: "
                           f"{counts['units_cancelled']}")
            steps_before, yielded_before = server_metrics(port)["steps"], server_metrics(port)["slices_yielded"]
            rows.append((what, got["status"], got["seconds"], status, seconds, same, before, rss_mb(pid), message))
    console = log.read_text()
    print(f"mafl serve against hostile requests (a random Llama, 1,024 positions; --slice-tokens "
          f"{args.slice_tokens}); the normal request: greedy, max_tokens {args.normal_tokens}, {alone:.3f} s alone")
    print("| request | status | its time | the next normal request: status, time (x alone), same text | RSS MiB "
          "before -> after | message |")
    print("|---|---|---|---|---|---|")
    for what, st, sec, nst, nsec, same, before, after, message in rows:
        print(f"| {what} | {st} | {sec:.2f} s | {nst}, {nsec:.2f} s ({nsec / alone:.1f}x), "
              f"{'same' if same else 'DIFFERENT'} | {before:.0f} -> {after:.0f} | {message[:110]} |")
    print(f"console: {len(console.splitlines())} lines, {console.count('Traceback')} tracebacks")
    for line in console.splitlines():
        print("  " + line[:200])


if __name__ == "__main__":
    main()
