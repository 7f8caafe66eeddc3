"""The worker process behind ``mafl.tasks.sandbox``: math-verify equivalence checks, one JSON line per check.

Run as a script (``python verify_worker.py CPU_SECONDS MEMORY_MB``) by the sandbox, never imported by mafl.
It only uses the standard library and math-verify, and only math-verify's LaTeX parser (never sympy's
``parse_expr``, which evaluates Python). Protocol on stdin/stdout::

    -> {"id": 7, "gold": "\\frac12", "pred": "0.5"}
    <- {"id": 7, "ok": true}

Guards that hold even if the parent is gone: an address-space limit, and a CPU-time limit reset before each
check (the kernel kills the process with SIGXCPU when one check runs away). math-verify's own SIGALRM
timeouts work here because this is the main thread of its own process.
"""
from __future__ import annotations

import json
import resource
import signal
import sys


def _limit_memory(megabytes: int) -> None:
    limit = megabytes * 1024 * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _limit_cpu_from_now(seconds: int) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = int(used.ru_utime + used.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = spent + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def main() -> None:
    cpu_seconds, memory_mb = int(sys.argv[1]), int(sys.argv[2])
    inner_timeout = max(1, cpu_seconds // 2)
    import logging

    logging.disable(logging.CRITICAL)  # math-verify logs every timeout; the parent reports results
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0)]

    def check(gold: str, pred: str) -> bool:
        g = parse("\\boxed{" + gold + "}", extraction_config=config, parsing_timeout=inner_timeout)
        p = parse("\\boxed{" + pred + "}", extraction_config=config, parsing_timeout=inner_timeout)
        return bool(g and p and verify(g, p, timeout_seconds=inner_timeout))

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which closes this worker
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU must not leave core files behind
    _limit_memory(memory_mb)
    check("1", "1")  # warm up the parser before saying ready
    sys.stdout.write('{"ready": true}\n')
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        _limit_cpu_from_now(cpu_seconds)
        try:
            ok = check(str(request["gold"]), str(request["pred"]))
        except BaseException:  # noqa: BLE001 - MemoryError, RecursionError, math-verify's TimeoutException
            ok = False
        sys.stdout.write(json.dumps({"id": request.get("id"), "ok": ok}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
