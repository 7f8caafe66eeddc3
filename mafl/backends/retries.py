"""Retrying the requests of an HTTP backend (``backend=openai``), on the console as they happen.

A request that fails with a status a server may recover from (408, 409, 429, 5xx), a dropped connection or a
timeout is sent again up to ``max_retries`` times, after an exponential back-off with jitter (0.5 s, 1 s, 2 s...,
at most 8 s) or the server's own ``retry-after-ms`` / ``retry-after`` when it gives one (at most 60 s). Each retry
is reported on the console (at most one line every 2 s; the retries in between are counted in the next line), so a
silent server never holds a run without a word.
"""
from __future__ import annotations

import random
import threading
import time

from mafl.errors import one_line

BASE_DELAY, MAX_DELAY, MAX_SERVER_DELAY = 0.5, 8.0, 60.0
REPORT_EVERY = 2.0  # seconds between two retry lines on the console


def retryable_status(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def backoff(attempt: int, headers=None, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): the server's ``retry-after-ms`` or
    ``retry-after`` (seconds) where it sends one, else an exponential back-off with jitter."""
    for key, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(key) if headers is not None else None
        try:
            if value is not None and float(value) >= 0:
                return min(float(value) * scale, MAX_SERVER_DELAY)
        except ValueError:  # an HTTP date: the back-off below
            pass
    delay = min(BASE_DELAY * 2 ** (attempt - 1), MAX_DELAY)
    return delay * (0.75 + 0.5 * (rng or random).random())


class RetryReport:
    """The console lines of the retries of one backend: the first at once, then at most one every
    ``REPORT_EVERY`` seconds, counting those in between. Thread-safe (the requests run in the client's loop)."""

    def __init__(self, where: str, say=None):
        self.where = where
        self.say = say
        self.total = 0
        self._unsaid = 0
        self._last = float("-inf")
        self._lock = threading.Lock()

    def retry(self, reason: str, attempt: int, of: int, delay: float) -> None:
        with self._lock:
            self.total += 1
            self._unsaid += 1
            now = time.monotonic()
            if now - self._last < REPORT_EVERY:
                return
            others, self._unsaid, self._last = self._unsaid - 1, 0, now
        more = f" (+{others} other retr{'y' if others == 1 else 'ies'} since the last line)" if others else ""
        self._say(f"backend=openai: {self.where}: {one_line(reason, 160)}; retry {attempt} of {of} in "
                  f"{delay:.1f} s{more}")

    def _say(self, text: str) -> None:
        if self.say is not None:
            self.say(text)
            return
        from mafl.progress import line

        line(text)
