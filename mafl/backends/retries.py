"""Retrying the requests of an HTTP backend (``backend=openai``), on the console as they happen.

A request that fails with a status a server may recover from (408, 409, 429, 5xx), a dropped connection or a
timeout is sent again up to ``max_retries`` times, after an exponential back-off with jitter (0.5 s, 1 s, 2 s...,
at most 8 s) or the server's own ``retry-after-ms`` / ``retry-after`` when it gives one (at most 60 s). Each retry
is reported on the console (at most one line every 2 s; the retries in between are counted in the next line), so a
silent server never holds a run without a word.

Retries must not pile onto a busy server (one that may still be working on the copy a client gave up on):
:class:`BusyGate` lets at most ``limit`` attempts be in flight, and a server that is busy (an attempt timed out, or
a 429 or 503) halves that limit, or brings it down to what the server answers within the timeout at the pace
measured between its answers (once per round of attempts, never below 1), and holds every new attempt for the time
the server takes to answer one for each copy that timed out, so that those copies are done before others are sent;
each ``limit`` answers in a row let one more in again, up to ``max_concurrency`` and that pace. An
attempt that timed out while the server answered other requests of the same client, and that was not alone in
flight, found a busy server, not a gone one: it is sent again without using one of ``max_retries`` (every such
retry is paired with an answer, so the work still ends); alone in flight, a timeout counts as any other failure.
"""
from __future__ import annotations

import asyncio
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

    def retry(self, reason: str, attempt: int, of: int, delay: float, counted: bool = True) -> None:
        with self._lock:
            self.total += 1
            self._unsaid += 1
            now = time.monotonic()
            if now - self._last < REPORT_EVERY:
                return
            others, self._unsaid, self._last = self._unsaid - 1, 0, now
        more = f" (+{others} other retr{'y' if others == 1 else 'ies'} since the last line)" if others else ""
        which = f"retry {attempt} of {of}" if counted else f"retry (not counted: {attempt} of {of} used)"
        self._say(f"backend=openai: {self.where}: {one_line(reason, 200)}; {which} in {delay:.1f} s{more}")

    def _say(self, text: str) -> None:
        if self.say is not None:
            self.say(text)
            return
        from mafl.progress import line

        line(text)


class BusyGate:
    """At most ``limit`` attempts in flight, none while the server is still busy with copies that timed out (see the
    module docstring)."""

    def __init__(self, maximum: int, timeout: float | None = None):
        self.maximum = self.limit = max(1, int(maximum))
        self.timeout = timeout  # of one attempt: the server must answer what is in flight within it
        self.in_flight = self.answers = self.cuts = 0
        self.interval: float | None = None  # seconds between two answers while the server is busy (a running mean)
        self.hold_until = 0.0  # no attempt starts before (the server finishing the copies that timed out)
        self._grown = 0
        self._last_cut = float("-inf")
        self._last_answer: float | None = None
        self._cond: asyncio.Condition | None = None

    def fit(self) -> int:
        """The attempts in flight that the server answers within the timeout, at the pace measured (with a fifth
        to spare); ``maximum`` while it is not known."""
        if self.interval is None or not self.timeout or self.interval <= 0:
            return self.maximum
        return max(1, min(self.maximum, int(0.8 * self.timeout / self.interval)))

    def held(self) -> float:
        """Seconds until attempts may start again."""
        return max(0.0, self.hold_until - time.monotonic())

    async def acquire(self) -> tuple[float, int, int]:
        """Wait for a place; (start time, answers so far, attempts in flight besides this one)."""
        if self._cond is None:
            self._cond = asyncio.Condition()
        while True:
            if (wait := self.held()) > 0:
                await asyncio.sleep(wait)
                continue
            async with self._cond:
                if self.held() > 0:
                    continue
                if self.in_flight < self.limit:
                    self.in_flight += 1
                    return time.monotonic(), self.answers, self.in_flight - 1
                await self._cond.wait()

    async def release(self, ticket: tuple[float, int, int], outcome: str) -> bool:
        """End an attempt: ``ok`` (an answer), ``busy`` (a timeout, 429, 503) or ``failed``. True when a busy
        attempt was not alone and other answers came while it waited: a busy server, not a gone one."""
        started, answers, others = ticket
        now = time.monotonic()
        async with self._cond:
            self.in_flight -= 1
            if outcome == "ok":
                if self._last_answer is not None and started < self._last_answer:  # the server was busy between
                    gap = now - self._last_answer
                    self.interval = gap if self.interval is None else 0.8 * self.interval + 0.2 * gap
                self._last_answer = now
                self.answers += 1
                self._grown += 1
                if self.limit < self.fit() and self._grown >= self.limit:
                    self.limit, self._grown = self.limit + 1, 0
            elif outcome == "busy":
                if started >= self._last_cut:  # one cut per round of attempts
                    self.limit, self._grown, self._last_cut = max(1, min(self.limit // 2, self.fit())), 0, now
                    self.cuts += 1
                if self.interval is not None:  # the copy that timed out may still run there: wait for it
                    self.hold_until = max(self.hold_until, now) + self.interval
            self._cond.notify_all()
            return outcome == "busy" and others > 0 and self.answers > answers
