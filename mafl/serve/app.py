"""The OpenAI-compatible endpoints of ``mafl serve`` over one transformers backend (:class:`HFBackend`).

=====================================  ===============================================================================
``GET /v1/models``                     the base model and every adapter served (an adapter has ``root``: its folder,
                                       and ``parent``: the base model, as vLLM lists them)
``POST /v1/chat/completions``          ``model``, ``messages``, ``temperature``, ``top_p``, ``top_k`` (vLLM's
                                       extension), ``max_tokens`` / ``max_completion_tokens``, ``n``, ``seed``,
                                       ``stop``; generation stops at the tokenizer's eos; ``usage`` counts tokens
                                       (the completion's closing eos included, as vLLM counts it)
``POST /v1/completions``               prompt log-probabilities (vLLM's ``prompt_logprobs``) of a prompt given as
                                       text or token ids; it generates nothing (generation is chat only)
``POST /v1/load_lora_adapter``         ``{lora_name, lora_path}``: serve a LoRA adapter (or whole model) folder at
``POST /v1/unload_lora_adapter``       run time, as vLLM's endpoints of the same names; ``{lora_name}``: stop
``GET /health``                        200 once the model is loaded
=====================================  ===============================================================================

Requests that arrive together are answered by one backend call: a single worker takes every request waiting in
the queue (after ``batch_wait`` seconds), and the backend batches them across models. Prompts are tokenized with
:mod:`mafl.backends.chat`, as everywhere in mafl. Greedy decoding gives the same answers however requests are
batched; a sampled answer is drawn with a generator of its own, seeded by the request's ``seed``: it depends on the
seed and the prompt only, not on which requests arrive together.

A backend call that fails is made again request by request, so that only the request that fails gets the error
(a 500), and the backend is left as it was (``mafl.backends.hf.no_stale_hooks``). At most ``max_loras`` adapters
are in memory at once: the least recently used is unloaded, and loaded again from its folder when asked for.

Errors have OpenAI's shape (``{"error": {"message", "type", "code"}}``): 404 for a model that is not served, 400
for a bad request, whose message starts with the field: a wrong shape or value, an empty prompt, and the fields
mafl serve does not implement (``UNSUPPORTED``: tools, response_format, logprobs, penalties...) unless they hold
their no-op value. With ``api_key`` set, every ``/v1`` request needs ``Authorization: Bearer <key>``.
"""
from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from mafl.backends.base import Completion, GenerationRequest, Sampling, request_seed
from mafl.models import is_adapter_folder
from mafl.errors import one_line

DEFAULT_MAX_TOKENS = 256
DEFAULT_MAX_LORAS = 16  # adapters held in memory at once (the others are loaded again from disk when asked for)


class ServeError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass
class _Job:
    kind: str  # generate | score | admin
    payload: Any
    future: asyncio.Future = field(repr=False)


class BatchQueue:
    """One worker runs every backend call, one at a time, in a thread: consecutive ``generate`` (or ``score``)
    jobs waiting in the queue go to the backend as one call; ``admin`` jobs (loading weights) run alone."""

    def __init__(self, run: dict[str, Callable[[list], list]], batch_wait: float = 0.02, max_batch: int = 1024):
        self.run, self.batch_wait, self.max_batch = run, batch_wait, max_batch
        self.queue: asyncio.Queue[_Job] | None = None
        self.worker: asyncio.Task | None = None
        self.calls = 0  # backend calls made (generate and score)

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    async def submit(self, kind: str, payload: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(kind, payload, future))
        return await future

    async def _work(self) -> None:
        pending: list[_Job] = []
        while True:
            if not pending:
                pending.append(await self.queue.get())
                await asyncio.sleep(self.batch_wait)  # let the requests sent together arrive
            while not self.queue.empty():
                pending.append(self.queue.get_nowait())
            kind = pending[0].kind
            n = 1
            if kind != "admin":
                while n < len(pending) and pending[n].kind == kind and n < self.max_batch:
                    n += 1
            batch, pending = pending[:n], pending[n:]
            batch = [j for j in batch if not j.future.cancelled()]
            if not batch:
                continue
            await self._answer(kind, batch, alone=len(batch) == 1)

    async def _answer(self, kind: str, batch: list[_Job], alone: bool) -> None:
        """Run ``batch`` as one backend call; if the call fails, each job again on its own, so that only the
        request that fails gets the error (the backend is left as it was: see ``no_stale_hooks``)."""
        try:
            results = await asyncio.to_thread(self.run[kind], [j.payload for j in batch])
            self.calls += kind != "admin"
        except Exception as e:  # noqa: BLE001 - the error goes back to the request
            if not alone:
                for j in batch:
                    await self._answer(kind, [j], alone=True)
                return
            for j in batch:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        for j, r in zip(batch, results):
            if not j.future.done():
                j.future.set_result(r)


def _text(content) -> str:
    """A message's content: a string, or OpenAI's list of parts (the text parts, joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if any(p.get("type", "text") != "text" or not isinstance(p.get("text", ""), str) for p in content):
            raise ServeError(400, "messages: mafl serve reads text parts only ({type: text, text: ...})")
        return "".join(p.get("text", "") for p in content)
    raise ServeError(400, "messages: a content is a string or a list of parts")


def _messages(value) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise ServeError(400, "messages: a non-empty list of {role, content}")
    for k, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ServeError(400, f"messages[{k}]: an object with a role (a string) and a content (got {m!r:.60})")
    return [{"role": m["role"], "content": _text(m.get("content"))} for m in value]


def _stops(stop) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return stop
    raise ServeError(400, f"stop: a string or a list of strings (got {stop!r:.60})")


# request fields that would change the answer and that mafl serve does not implement: refused unless they are
# absent or at their no-op value (a client that sends the defaults gets what it asked for)
UNSUPPORTED = {"tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []), "function_call": (None,),
               "response_format": (None, {"type": "text"}), "logprobs": (None, False), "top_logprobs": (None, 0),
               "logit_bias": (None, {}), "frequency_penalty": (None, 0), "presence_penalty": (None, 0),
               "repetition_penalty": (None, 1), "best_of": (None, 1), "echo": (None, False), "suffix": (None,)}


def _refuse_unsupported(body: dict) -> None:
    for key, no_op in UNSUPPORTED.items():
        if key in body and body[key] not in no_op:
            raise ServeError(400, f"{key}: not supported by mafl serve (got {body[key]!r:.60}); leave it out")


def _cut_at_stop(text: str, stop) -> tuple[str, bool]:
    stops = _stops(stop)
    at = min((i for s in stops if s and (i := text.find(s)) >= 0), default=None)
    return (text, False) if at is None else (text[:at].rstrip(), True)


def _number(body: dict, key: str, default, kind=float, low=None, high=None):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ServeError(400, f"{key}: must be a{'n integer' if kind is int else ' number'} (got {value!r:.60})")
    if low is not None and value < low:
        raise ServeError(400, f"{key}: must be >= {low} (got {value})")
    if high is not None and value > high:
        raise ServeError(400, f"{key}: must be <= {high} (got {value})")
    return kind(value)


class Server:
    """The served weights and the endpoints' work, on one :class:`HFBackend` (``backend``)."""

    def __init__(self, backend, base_name: str, adapters: dict[str, str] | None = None, *,
                 batch_wait: float = 0.02, api_key: str | None = None, max_loras: int = DEFAULT_MAX_LORAS):
        if max_loras < 1:
            raise ValueError(f"--max-loras: must be >= 1 (got {max_loras})")
        self.backend, self.base_name = backend, base_name
        self.roots: dict[str, str] = {}  # served adapter name -> its folder
        self.max_loras = max_loras
        self.resident: OrderedDict[str, None] = OrderedDict()  # the adapters in memory, least recently used first
        self.api_key = api_key
        self.created = int(time.time())
        for name, path in (adapters or {}).items():
            self.roots[name] = str(Path(path).resolve())
        self._resident(list(self.roots)[-max_loras:])  # the others are loaded when first asked for
        self.queue = BatchQueue({"generate": self._generate, "score": self._score, "admin": self._admin},
                                batch_wait=batch_wait)

    # -- work done by the queue's worker (a thread) ----------------------------------------------------------
    def _resident(self, names) -> None:
        """Hold the adapters ``names`` (at most ``max_loras``) in memory: load those that are not, unloading the
        least recently used others to stay within ``max_loras``."""
        for name in names:
            if name in self.resident:
                self.resident.move_to_end(name)
                continue
            while len(self.resident) >= self.max_loras:
                victim = next(n for n in self.resident if n not in names)
                self.backend.unload(victim)
                del self.resident[victim]
            self.backend.load_adapter(name, self.roots[name])
            self.resident[name] = None

    def _admin(self, jobs):
        out = []
        for action, args in jobs:
            if action == "load":
                name, path = args
                self.roots[name] = str(Path(path).resolve())
                try:
                    self._resident([name])
                except Exception:
                    del self.roots[name]
                    self.resident.pop(name, None)
                    self.backend.unload(name)
                    raise
            elif action == "unload":
                self.backend.unload(args)
                self.roots.pop(args, None)
                self.resident.pop(args, None)
            out.append(None)
        return out

    def _in_groups(self, adapters: list[str | None]) -> list[list[int]]:
        """The indices of the jobs, in groups that need at most ``max_loras`` adapters each."""
        names = list(dict.fromkeys(a for a in adapters if a is not None))
        cuts = [set(names[k:k + self.max_loras]) for k in range(0, len(names), self.max_loras)] or [set()]
        return [[i for i, a in enumerate(adapters) if (a in cut) or (a is None and g == 0)] for g, cut in enumerate(cuts)]

    def _generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        out: list = [None] * len(requests)
        for idx in self._in_groups([r.adapter for r in requests]):
            self._resident([requests[i].adapter for i in idx if requests[i].adapter is not None])
            group = [requests[i] for i in idx]
            # each request samples with its own seed (its HTTP request's), whatever is batched beside it
            for i, c in zip(idx, self.backend.generate_seeded(group, [r.sampling.seed for r in group])):
                out[i] = c
        return out

    def _score(self, jobs: list[tuple[list[int], str | None]]):
        out: list = [None] * len(jobs)
        by_adapter: dict[str | None, list[int]] = {}
        for i, (_, adapter) in enumerate(jobs):
            by_adapter.setdefault(adapter, []).append(i)
        for adapter, idx in by_adapter.items():
            if adapter is not None:
                self._resident([adapter])
            for i, r in zip(idx, self.backend.token_logprobs([jobs[i][0] for i in idx], adapter)):
                out[i] = r
        return out

    # -- requests --------------------------------------------------------------------------------------------
    def adapter_of(self, model: str | None) -> str | None:
        if model == self.base_name:
            return None
        if model not in self.roots:
            raise ServeError(404, f"The model `{model}` does not exist.", "NotFoundError")
        return model

    def models(self) -> dict:
        data = [{"id": self.base_name, "object": "model", "created": self.created, "owned_by": "mafl",
                 "root": self.base_name, "parent": None}]
        data += [{"id": n, "object": "model", "created": self.created, "owned_by": "mafl", "root": root,
                  "parent": self.base_name} for n, root in sorted(self.roots.items())]
        return {"object": "list", "data": data}

    async def chat(self, body: dict) -> dict:
        if body.get("stream"):
            raise ServeError(400, "stream: mafl serve answers whole responses only")
        adapter = self.adapter_of(body.get("model"))
        messages = _messages(body.get("messages"))
        _refuse_unsupported(body)
        _stops(body.get("stop"))
        temperature = _number(body, "temperature", 1.0, low=0, high=2)
        top_p = _number(body, "top_p", 1.0, low=0, high=1)
        if top_p == 0:
            raise ServeError(400, "top_p: must be > 0 (got 0)")
        top_k = max(_number(body, "top_k", 0, int), 0)
        max_tokens = _number(body, "max_completion_tokens", None, int, low=1)
        max_tokens = max_tokens or _number(body, "max_tokens", DEFAULT_MAX_TOKENS, int, low=1)
        n = _number(body, "n", 1, int, low=1)
        seed = _number(body, "seed", 0, int)
        from mafl.backends import chat

        prompt_tokens = len(chat.prompt_ids(self.backend.tokenizer, messages))
        requests = [GenerationRequest(messages, adapter=adapter, sampling=Sampling(
            temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_tokens,
            seed=seed if i == 0 else request_seed(seed, i))) for i in range(n)]
        completions = await asyncio.gather(*(self.queue.submit("generate", r) for r in requests))
        choices = []
        for i, c in enumerate(completions):
            text, stopped = _cut_at_stop(c.text, body.get("stop"))
            choices.append({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                            "finish_reason": "stop" if c.finished or stopped else "length"})
        completion_tokens = sum(c.num_tokens for c in completions)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"), "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    async def completions(self, body: dict) -> dict:
        """Prompt log-probabilities only (``prompt_logprobs``, vLLM's format); nothing is generated."""
        adapter = self.adapter_of(body.get("model"))
        prompt = body.get("prompt")
        tok = self.backend.tokenizer
        if isinstance(prompt, list) and len(prompt) == 1 and not isinstance(prompt[0], int):
            prompt = prompt[0]  # one prompt in a list
        if isinstance(prompt, str):
            ids = list(tok(prompt, add_special_tokens=False)["input_ids"])
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            ids = prompt
            if max(ids) >= len(tok) or min(ids) < 0:
                raise ServeError(400, f"prompt: token ids must be within [0, {len(tok)})")
        else:
            raise ServeError(400, "prompt: one text or one list of token ids")
        if not ids:
            raise ServeError(400, "prompt: empty (no token to score)")
        if body.get("prompt_logprobs") is None:
            raise ServeError(400, "mafl serve's /v1/completions only scores prompts: set prompt_logprobs (generation "
                                  "is at /v1/chat/completions)")
        logprobs, ranks = await self.queue.submit("score", (ids, adapter))
        entries = [None] + [{str(t): {"logprob": lp, "rank": rk, "decoded_token": tok.decode([t])}}
                            for t, lp, rk in zip(ids[1:], logprobs[1:], ranks[1:])]
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "length",
                             "prompt_logprobs": entries}],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}}

    async def load(self, body: dict) -> str:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            raise ServeError(400, "lora_name and lora_path are required")
        if name == self.base_name:
            raise ServeError(400, f"{name!r} is the base model's name")
        if name in self.roots:
            raise ServeError(400, f"The lora adapter '{name}' has already been loaded.")
        if not Path(path).is_dir():
            raise ServeError(404, f"no adapter folder at {path}", "NotFoundError")
        if not (is_adapter_folder(path) or (Path(path) / "config.json").is_file()):
            raise ServeError(400, f"lora_path: {path} is neither a LoRA adapter folder (adapter_config.json) nor a "
                                  "model folder (config.json)")
        try:
            await self.queue.submit("admin", ("load", (name, path)))
        except Exception as e:  # noqa: BLE001 - weights that do not fit the base model, a broken file
            raise ServeError(400, f"lora_path: the weights in {path} cannot be loaded onto {self.base_name} "
                                  f"({type(e).__name__}: {one_line(e, 200)})") from None
        return f"Success: LoRA adapter '{name}' added successfully."

    async def unload(self, body: dict) -> str:
        name = body.get("lora_name")
        if name not in self.roots:
            raise ServeError(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        await self.queue.submit("admin", ("unload", name))
        return f"Success: LoRA adapter '{name}' removed successfully."

    def authorized(self, header: str | None) -> bool:
        if self.api_key is None:
            return True
        given = (header or "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), self.api_key.encode())


def create_app(server: Server):
    """The FastAPI application of ``server``."""
    async def lifespan(app):
        server.queue.start()
        yield
        await server.queue.stop()

    app = FastAPI(title="mafl serve", lifespan=lifespan)

    def error(status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}},
                            status_code=status)

    @app.exception_handler(ServeError)
    async def _serve_error(request, e: ServeError):
        return error(e.status, e.message, e.kind)

    @app.exception_handler(Exception)
    async def _internal_error(request, e: Exception):
        return error(500, f"{type(e).__name__}: {e}", "internal_error")

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if request.url.path.startswith("/v1/") and not server.authorized(request.headers.get("authorization")):
            return error(401, "Incorrect API key provided.", "invalid_api_key")
        return await call_next(request)

    async def body_of(request: Request) -> dict:
        try:
            body = await request.json()
        except ValueError:
            raise ServeError(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise ServeError(400, "the request body is not a JSON object")
        return body

    @app.get("/health")
    async def health():
        return PlainTextResponse("ok")

    @app.get("/v1/models")
    async def models():
        return server.models()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await server.chat(await body_of(request))

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await server.completions(await body_of(request))

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(request: Request):
        return PlainTextResponse(await server.load(await body_of(request)))

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(request: Request):
        return PlainTextResponse(await server.unload(await body_of(request)))

    return app
