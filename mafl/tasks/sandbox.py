"""Symbolic equivalence checks with a hard time limit, safe from any thread.

math-verify bounds its own work with ``signal.alarm``, which works only in the main thread, and cannot stop a
computation stuck in C (``9^{9^{9^{9}}}`` is one big integer power). So every symbolic check runs in a small
pool of worker processes (``verify_worker.py``): the caller waits at most ``timeout`` seconds of wall time,
then kills the worker and counts the check as *not equivalent*; a new worker is started on the next check.
Workers also carry an address-space limit and a per-check CPU limit, so a runaway check dies even when
nobody is waiting for it.

    sandbox = get_sandbox(timeout=5.0)
    sandbox.check(gold="\\frac12", pred="0.5")        # True
    sandbox.check_many([("1", "2"), ("x=3", "3")])   # [False, True]
"""
from __future__ import annotations

import atexit
import json
import logging
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("verify_worker.py")


class SandboxError(RuntimeError):
    """A worker process could not be started."""


class _Worker:
    """One worker process and the line-buffered pipe to it."""

    def __init__(self, timeout: float, memory_mb: int, startup_timeout: float):
        cpu_seconds = math.ceil(timeout) + 2
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), str(cpu_seconds), str(memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
        )
        self._buffer = b""
        self._next_id = 0
        line = self._read_line(startup_timeout)
        try:
            ready = line is not None and json.loads(line).get("ready") is True
        except (ValueError, AttributeError):
            ready = False
        if not ready:
            code = self.kill()
            raise SandboxError(
                f"the math-verify worker did not start within {startup_timeout:.0f}s (exit code {code}); "
                f"is math-verify installed? pip install 'math-verify[antlr4_9_3]'"
            )

    def ask(self, gold: str, pred: str, timeout: float) -> bool | None:
        """The worker's verdict, or None when it did not answer in time (or died)."""
        self._next_id += 1
        request = json.dumps({"id": self._next_id, "gold": gold, "pred": pred}) + "\n"
        try:
            self.proc.stdin.write(request.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        line = self._read_line(timeout)
        if line is None:
            return None
        try:
            reply = json.loads(line)
        except ValueError:
            return None
        return bool(reply.get("ok")) if reply.get("id") == self._next_id else None

    def _read_line(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:  # the worker died
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def kill(self) -> int | None:
        try:
            self.proc.kill()
            return self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        finally:
            for pipe in (self.proc.stdin, self.proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # the worker exits at the end of its input
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


@dataclass
class SandboxStats:
    checks: int = 0
    timeouts: int = 0  # checks with no answer in time, or whose worker died (not equivalent); each kills its worker
    started: int = 0  # worker processes started


class Sandbox:
    """A pool of at most ``workers`` worker processes; ``check`` is thread-safe and never raises."""

    def __init__(self, timeout: float = 5.0, workers: int = 2, memory_mb: int = 2048, startup_timeout: float = 120.0):
        self.timeout, self.workers, self.memory_mb, self.startup_timeout = timeout, workers, memory_mb, startup_timeout
        self.stats = SandboxStats()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(workers)
        self._idle: list[_Worker] = []
        self._pid = os.getpid()

    def check(self, gold: str, pred: str) -> bool:
        """True when math-verify finds ``pred`` equivalent to ``gold`` within the time limit."""
        with self._slots:
            worker = self._take()
            if worker is None:
                return False
            verdict = worker.ask(gold, pred, self.timeout)
            with self._lock:
                self.stats.checks += 1
                if verdict is None:
                    self.stats.timeouts += 1
                else:
                    self._idle.append(worker)
            if verdict is None:
                log.warning("equivalence check gave no answer within %.1fs: counted not equivalent "
                            "(gold %.80r, prediction %.80r)", self.timeout, gold, pred)
                worker.kill()
            return bool(verdict)

    def check_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """``check`` on every (gold, pred) pair, ``workers`` at a time, in order."""
        if len(pairs) <= 1 or self.workers == 1:
            return [self.check(g, p) for g, p in pairs]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(lambda pair: self.check(*pair), pairs))

    def _take(self) -> _Worker | None:
        with self._lock:
            if os.getpid() != self._pid:  # a forked child must not share its parent's pipes
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
            self.stats.started += 1
        try:
            return _Worker(self.timeout, self.memory_mb, self.startup_timeout)
        except (SandboxError, OSError, ValueError) as err:
            log.error("%s", err)
            return None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        if os.getpid() == self._pid:
            for worker in idle:
                worker.close()


_SANDBOXES: dict[tuple, Sandbox] = {}
_SANDBOXES_LOCK = threading.Lock()


def get_sandbox(timeout: float = 5.0, workers: int | None = None, memory_mb: int = 2048) -> Sandbox:
    """The process-wide sandbox with these settings (workers default: the number of CPUs, at most 4)."""
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    key = (float(timeout), int(workers), int(memory_mb))
    with _SANDBOXES_LOCK:
        if key not in _SANDBOXES:
            _SANDBOXES[key] = Sandbox(timeout=timeout, workers=workers, memory_mb=memory_mb)
        return _SANDBOXES[key]


@atexit.register
def _close_all() -> None:
    for sandbox in list(_SANDBOXES.values()):
        sandbox.close()
