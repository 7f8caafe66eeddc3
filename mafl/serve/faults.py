"""Failures injected on purpose, for testing clients against the real server: ``mafl serve --inject-faults
429=0.1,500=0.1,drop=0.1,seed=0`` answers each POST under ``/v1/`` with a 429 (rate limit, with a short
``retry-after-ms``), a 500, or a connection dropped in the middle of the response (after the work is done), each
with its probability, drawn from a seeded generator; ``oom=0.2`` makes that share of the model's forward passes
raise inside the backend, as an out-of-memory error on a GPU would (the server must answer that request with a 500
and every later one as if nothing happened). Never on by default; not for production use.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass

KINDS = ("429", "500", "drop")  # drawn once per request
FORWARD_KINDS = ("oom",)  # drawn once per forward pass of the model


@dataclass(frozen=True)
class FaultSpec:
    rates: dict[str, float]
    seed: int = 0

    @classmethod
    def parse(cls, text: str) -> "FaultSpec":
        """``429=0.1,500=0.05,drop=0.1,seed=3``: a ValueError naming a bad part."""
        rates, seed = {}, 0
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            try:
                if key == "seed":
                    seed = int(value)
                    continue
                rate = float(value)
            except ValueError:
                raise ValueError(f"--inject-faults: {part!r} is not KIND=NUMBER") from None
            if key not in KINDS + FORWARD_KINDS or not 0 <= rate <= 1:
                raise ValueError(f"--inject-faults: {part!r}: the kind is one of {', '.join(KINDS + FORWARD_KINDS)} "
                                 "and the rate within [0, 1]")
            rates[key] = rate
        if sum(rates.get(k, 0.0) for k in KINDS) > 1:
            raise ValueError("--inject-faults: the rates add up to more than 1")
        return cls(rates=rates, seed=seed)


class ForwardFaults:
    """A forward pre-hook on a model that raises, for a share ``rate`` of its forward passes (seeded), the error an
    out-of-memory GPU would; ``count`` of them so far."""

    def __init__(self, model, rate: float, seed: int = 0):
        self.rate, self.rng, self.count = rate, random.Random(f"{seed}/forward"), 0
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        if self.rng.random() < self.rate:
            self.count += 1
            raise RuntimeError("injected fault: out of memory in the forward pass")


class FaultInjection:
    """An ASGI middleware that injects the faults of a :class:`FaultSpec` into POST requests under ``/v1/``."""

    def __init__(self, app, spec: FaultSpec, forward: ForwardFaults | None = None):
        self.app, self.spec, self.forward = app, spec, forward
        self.rng = random.Random(spec.seed)
        self.counts = {k: 0 for k in KINDS}

    def _draw(self) -> str | None:
        x, edge = self.rng.random(), 0.0
        for kind in KINDS:
            edge += self.spec.rates.get(kind, 0.0)
            if x < edge:
                return kind
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == "/faults":
            counts = {**self.counts, **({"oom": self.forward.count} if self.forward is not None else {})}
            body = json.dumps(counts).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        kind = self._draw()
        if kind is None:
            return await self.app(scope, receive, send)
        self.counts[kind] += 1
        if kind in ("429", "500"):
            status = int(kind)
            body = json.dumps({"error": {"message": f"injected fault {status}", "type": "injected_fault",
                                         "code": status}}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            if status == 429:
                headers.append((b"retry-after-ms", b"20"))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return

        async def cut(message):
            """Send the response's head and half its body, then fail: the server closes the connection."""
            if message["type"] == "http.response.body":
                body = message.get("body", b"")
                await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
                raise ConnectionAbortedError("injected fault: connection dropped")
            await send(message)

        await self.app(scope, receive, cut)
