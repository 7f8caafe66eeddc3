"""A bounded load test of `mafl serve` (a subprocess on 127.0.0.1): throughput, latency, errors and memory.

Sends ``--requests`` requests (3 of 4 sampled chat completions with their own seeds, 1 of 4 prompt log-probability
requests, on the base model and 2 LoRA adapters loaded at run time) with ``--concurrency`` in flight at once, after
a baseline of one request at a time; prints requests/s, p50/p99 latency, the errors (any answer but a 200), the
server's resident memory along the way, and each as a ratio against the baseline.

    python experiments/benchmarks/serve_load.py [--requests 2000] [--concurrency 64] [--model-path FOLDER]

Without ``--model-path`` the model is a small random Llama with mafl's tokenizer (tests/conftest.py), built here in
seconds: the numbers measure the server (queue, batching, HTTP), not a model.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))

MODELS = (None, "a", "b")  # the base model and two adapters


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` (Linux), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_request(k: int, base: str, max_tokens: int) -> tuple[str, dict]:
    model = MODELS[k % len(MODELS)] or base
    if k % 4 == 3:
        return "/completions", {"model": model, "prompt": [5 + k % 50, 9, 30, 41, 7, 12 + k % 7], "prompt_logprobs": 1}
    return "/chat/completions", {"model": model, "max_tokens": max_tokens, "seed": k, "temperature": 1.0,
                                 "messages": [{"role": "user", "content": f"What is {k % 97}+{k % 13}*{k % 7}?"}]}


def timed(url: str, path: str, body: dict) -> tuple[float, int]:
    from serving import api_call

    start = time.perf_counter()
    status, _ = api_call(url, path, body, timeout=300)
    return time.perf_counter() - start, status


def measure(url: str, base: str, ks: range, concurrency: int, max_tokens: int, pid: int) -> dict:
    memory = [rss_mb(pid)]
    marks = {ks.start + (len(ks) * j) // 10 for j in range(1, 11)}
    start = time.perf_counter()
    latencies, errors = [], 0
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        futures = {pool.submit(timed, url, *make_request(k, base, max_tokens)): k for k in ks}
        for done in concurrent.futures.as_completed(futures):
            seconds, status = done.result()
            latencies.append(seconds)
            errors += status != 200
            if futures[done] in marks:
                memory.append(rss_mb(pid))
    wall = time.perf_counter() - start
    memory.append(rss_mb(pid))
    latencies.sort()
    return {"n": len(ks), "wall": wall, "rps": len(ks) / wall, "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], "errors": errors,
            "memory": memory}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--baseline", type=int, default=100, help="requests sent one at a time first")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--batch-size", type=int, default=64, help="mafl serve --batch-size")
    args = ap.parse_args()

    from conftest import make_random_model
    from serving import api_call, make_adapters, mafl_serve

    work = Path(tempfile.mkdtemp(prefix="mafl-serve-load-"))
    base = args.model_path or str(make_random_model(work / "model", tie=False))
    adapters = make_adapters(base, ["a", "b"], work / "adapters")
    with mafl_serve(["--model", base, "--batch-size", str(args.batch_size)], work / "serve.log") as server:
        for name, path in adapters.items():
            assert api_call(server.url, "/load_lora_adapter", {"lora_name": name, "lora_path": path})[0] == 200
        pid = server.proc.pid
        measure(server.url, base, range(0, 20), 4, args.max_tokens, pid)  # warm-up
        alone = measure(server.url, base, range(0, args.baseline), 1, args.max_tokens, pid)
        load = measure(server.url, base, range(args.baseline, args.baseline + args.requests), args.concurrency,
                       args.max_tokens, pid)
        after = rss_mb(pid)
    print(f"mafl serve load test: {args.requests} requests at concurrency {args.concurrency} (3/4 sampled chat "
          f"completions of {args.max_tokens} tokens, 1/4 prompt log-probabilities; base model + 2 runtime LoRA "
          f"adapters), after {args.baseline} requests one at a time")
    print(f"{'':24s}{'one at a time':>16s}{'concurrent':>14s}{'ratio':>10s}")
    for label, key, unit in (("throughput", "rps", "req/s"), ("latency p50", "p50", "s"), ("latency p99", "p99", "s")):
        print(f"{label:24s}{alone[key]:>12.3f} {unit:<4s}{load[key]:>10.3f} {unit:<4s}{load[key] / alone[key]:>8.2f}x")
    print(f"{'errors (non-200)':24s}{alone['errors']:>12d}     {load['errors']:>10d}")
    mem = load["memory"]
    print(f"server memory (RSS MiB) : before {mem[0]:.0f}, max {max(mem):.0f}, after {after:.0f} "
          f"(after/before {after / mem[0]:.3f}x); along the way: {', '.join(f'{m:.0f}' for m in mem)}")
    print(f"wall time of the concurrent phase: {load['wall']:.1f} s")


if __name__ == "__main__":
    main()
