"""How ``mafl serve`` shares its one model among requests: fairly, in bounded slices, and only for clients that
are still there.

A request becomes *units* of work (one per completion of its ``n``, one per prompt to score, one per adapter to
load), all of one *owner*. A single worker runs every backend call, one at a time, in a thread; each call takes a
*batch*: units of one key (kind, model, sampling settings, tokens left to generate), at most ``max_rows``.

* **Which batch next.** The owner with the smallest tag goes first, its tag being the server's work clock (decode
  steps run so far) when it arrived plus the steps its units have had since (start-time fair queueing): a request
  that has had much gives way to one that has had little, and one that arrived long ago is not passed over for
  ever. Units of other owners with the same key join the batch (batching as before).
* **Slices.** A generation that has run ``slice_tokens`` steps stops as soon as any other unit waits (or one of its
  own rows' clients is gone) and is queued again with what it has generated: its next slice continues from its
  prompt and those tokens, with the same sampling generators. Without contention it runs to its end in one call.
  So a request sent behind a long one waits for at most one slice of it (``slice_tokens`` steps of one batch)
  before its own work starts.
* **Cancelled.** A unit whose client went away (its future cancelled) is dropped from the queue, and a batch whose
  rows are all gone stops at its next step.
* **Failures.** A batch that raises is run again unit by unit (each sampling generator put back as it was), so only
  the unit that fails gets the error.

The counters (steps, batches, slices given way, units cancelled, units waiting and running, and the most steps of
other work a unit waited behind before its first batch) are served at ``GET /metrics``.
"""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

CONTINUE = object()  # a run function's result for a unit whose work goes on in another slice


@dataclass(eq=False)
class Owner:
    """One HTTP request: when it arrived (on the work clock) and how many steps its units have had."""

    arrival: int
    served: int = 0

    @property
    def tag(self) -> int:
        return self.arrival + self.served


@dataclass(eq=False)
class Unit:
    kind: str  # generate | score | admin
    fixed_key: tuple
    payload: Any
    owner: Owner
    future: asyncio.Future = field(repr=False)
    seq: int = 0
    submitted: int = 0  # the live work clock when it was queued
    started: bool = False

    @property
    def key(self) -> tuple:
        """Units of one key may share a batch: the kind and what the payload says (``payload.key()``: it may change
        from slice to slice), else the key given at submission."""
        own = getattr(self.payload, "key", None)
        return (self.kind, *(own() if callable(own) else self.fixed_key))


class Scheduler:
    """The queue and its worker. ``run[kind](payloads, stop) -> (results, steps)``: one backend call over a
    batch's payloads, in a thread; ``stop(steps)`` says whether a generation should end its slice now; a result
    is the unit's answer or :data:`CONTINUE`."""

    def __init__(self, run: dict[str, Callable], *, batch_wait: float = 0.02, max_rows: int = 64,
                 slice_tokens: int = 128):
        if slice_tokens < 1 or max_rows < 1:
            raise ValueError(f"slice_tokens and max_rows must be >= 1 (got {slice_tokens}, {max_rows})")
        self.run, self.batch_wait, self.max_rows, self.slice_tokens = run, batch_wait, max_rows, slice_tokens
        self.pending: list[Unit] = []
        self.running: list[Unit] = []
        self.clock = 0  # decode steps (a forward pass for scoring) run so far: the work clock
        self.live = 0  # the steps of the batch running now (updated as it runs)
        self.counts = {"batches": 0, "steps": 0, "slices_yielded": 0, "units_cancelled": 0, "units_failed": 0}
        self.max_wait_steps = 0  # the most steps of other work any unit waited behind before its first batch
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self.worker: asyncio.Task | None = None

    def start(self) -> None:
        self._wake = asyncio.Event()
        self.worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def owner(self) -> Owner:
        return Owner(arrival=self.clock)

    def submit(self, kind: str, key: tuple, payload: Any, owner: Owner) -> asyncio.Future:
        """Queue one unit; its future holds the answer (cancel it when the client is gone)."""
        future = asyncio.get_running_loop().create_future()
        self.pending.append(Unit(kind, tuple(key), payload, owner, future, next(self._seq),
                                 submitted=self.clock + self.live))
        self._wake.set()
        return future

    def metrics(self) -> dict:
        return {**self.counts, "units_waiting": len(self.pending), "units_running": len(self.running),
                "max_wait_steps": self.max_wait_steps}

    # -- the worker ------------------------------------------------------------------------------------------
    def _drop_cancelled(self) -> None:
        gone = [u for u in self.pending if u.future.done()]
        if gone:
            self.counts["units_cancelled"] += sum(u.future.cancelled() for u in gone)
            self.pending = [u for u in self.pending if not u.future.done()]

    def _next_batch(self) -> list[Unit]:
        order = sorted(self.pending, key=lambda u: (u.owner.tag, u.owner.served, u.seq))
        leader = order[0]
        if leader.kind == "admin":
            return [leader]
        return [u for u in order if u.key == leader.key][: self.max_rows]

    async def _work(self) -> None:
        while True:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
                await asyncio.sleep(self.batch_wait)  # let the requests sent together arrive
            self._drop_cancelled()
            if not self.pending:
                continue
            batch = self._next_batch()
            taken = set(map(id, batch))
            self.pending = [u for u in self.pending if id(u) not in taken]
            for u in batch:
                if not u.started:
                    u.started = True
                    self.max_wait_steps = max(self.max_wait_steps, self.clock - u.submitted)
            self.running = batch
            try:
                await self._answer(batch)
            except Exception as e:  # noqa: BLE001 - never the worker's end: the batch's requests get the error
                for u in batch:
                    if not u.future.done():
                        u.future.set_exception(e)
            finally:
                self.running = []

    def _stopper(self, batch: list[Unit]) -> Callable[[int], bool]:
        """``stop(steps)`` for a batch's generation, called in the worker's thread at every step."""
        def stop(steps: int) -> bool:
            self.live = steps
            gone = [u.future.done() for u in batch]
            if all(gone):
                return True
            return steps >= self.slice_tokens and (bool(self.pending) or any(gone))
        return stop

    async def _answer(self, batch: list[Unit]) -> None:
        kind = batch[0].kind
        saved = [getattr(u.payload, "save", lambda: None)() for u in batch]
        try:
            results, steps = await asyncio.to_thread(self.run[kind], [u.payload for u in batch], self._stopper(batch))
        except Exception as e:  # noqa: BLE001 - the error goes back to the request
            self.live = 0
            for u, state in zip(batch, saved):
                if state is not None:
                    u.payload.restore(state)
            if len(batch) > 1:
                for u in batch:
                    if not u.future.done():
                        await self._answer([u])
                return
            self.counts["units_failed"] += 1
            if not batch[0].future.done():
                batch[0].future.set_exception(e)
            return
        self.live = 0
        self.clock += steps
        self.counts["steps"] += steps
        self.counts["batches"] += kind != "admin"
        for owner in {id(u.owner): u.owner for u in batch}.values():
            owner.served += steps
        requeued = False
        for u, r in zip(batch, results):
            if u.future.done():
                self.counts["units_cancelled"] += u.future.cancelled()
            elif r is CONTINUE:
                self.pending.append(u)
                requeued = True
            else:
                u.future.set_result(r)
        self.counts["slices_yielded"] += requeued
