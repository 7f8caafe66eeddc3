"""The OpenAI-compatible endpoints of ``mafl serve`` over one transformers backend (:class:`HFBackend`).

=====================================  ===============================================================================
``GET /v1/models``                     the base model and every adapter served (an adapter has ``root``: its folder,
                                       and ``parent``: the base model, as vLLM lists them)
``POST /v1/chat/completions``          ``model``, ``messages``, ``temperature``, ``top_p``, ``top_k`` (vLLM's
                                       extension), ``max_tokens`` / ``max_completion_tokens``, ``n``, ``seed``,
                                       ``stop``; generation stops at the tokenizer's eos; ``usage`` counts tokens
                                       (the completion's closing eos included, as vLLM counts it)
``POST /v1/completions``               text generation from a prompt (a text, tokenized as it is, or token ids;
                                       the same sampling fields), or, with ``prompt_logprobs`` (vLLM's), the
                                       prompt's log-probabilities and no generation
``POST /v1/load_lora_adapter``         ``{lora_name, lora_path}``: serve a LoRA adapter (or whole model) folder at
``POST /v1/unload_lora_adapter``       run time, as vLLM's endpoints of the same names; ``{lora_name}``: stop
``GET /health``                        200 once the model is loaded
``GET /metrics``                       the scheduler's counters (Prometheus' text format, as vLLM's)
=====================================  ===============================================================================

Every request is checked before any work (:mod:`mafl.serve.limits`: the body's size, ``n``, the prompt plus
``max_tokens`` within the model's context, the messages' shape) and shares the model fairly with the others
(:mod:`mafl.serve.scheduler`: batched with requests of the same settings, long generations in slices that give way
to waiting work, the work of a client that went away cancelled). Prompts are tokenized with
:mod:`mafl.backends.chat`, as everywhere in mafl. Greedy decoding gives the same answers however requests are
batched (up to floating-point rounding, as batching itself); a sampled answer is drawn with a generator of its own,
seeded by the request's ``seed``: it depends on the seed and the prompt only, not on which requests arrive
together.

A backend call that fails is made again unit by unit, so that only the request that fails gets the error (a 500),
and the backend is left as it was (``mafl.backends.hf.no_stale_hooks``). At most ``max_loras`` adapters are in
memory at once: the least recently used is unloaded, and loaded again from its folder when asked for.

Errors have OpenAI's shape (``{"error": {"message", "type", "code"}}``): 404 for a model that is not served, 400
for a bad request, whose message starts with the field: a wrong shape or value, an empty prompt, a limit passed,
and the fields mafl serve does not implement (``UNSUPPORTED``: tools, response_format, logprobs, penalties...)
unless they hold their no-op value. Every failure is one line on the console (:mod:`mafl.serve.guard`).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mafl.backends.base import Completion, Sampling, request_seed
from mafl.errors import one_line
from mafl.models import is_adapter_folder
from mafl.serve.guard import CLIENT_GONE
from mafl.serve.limits import (Limits, ServeError, context_length, max_token_bytes, messages_of, number, seed_of,
                               unicode)
from mafl.serve.scheduler import CONTINUE, Scheduler

DEFAULT_MAX_LORAS = 16  # adapters held in memory at once (the others are loaded again from disk when asked for)
DEFAULT_SLICE_TOKENS = 128  # decode steps a generation runs before it gives way to waiting work


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


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    at = min((i for s in stops if s and (i := text.find(s)) >= 0), default=None)
    return (text, False) if at is None else (text[:at].rstrip(), True)


@dataclass(eq=False)
class Generation:
    """One completion's work: its prompt's token ids, the tokens generated so far (a generation runs in slices) and
    the generator it samples with (None: greedy)."""

    prompt: list[int]
    adapter: str | None
    sampling: Sampling  # max_new_tokens: the completion's budget
    generator: Any = None
    tokens: list[int] = field(default_factory=list)

    @property
    def left(self) -> int:
        return self.sampling.max_new_tokens - len(self.tokens)

    def key(self) -> tuple:
        """What the completions batched together share: the model, the sampling settings, the tokens left."""
        s = self.sampling
        return self.adapter, s.greedy, s.temperature, s.top_p, s.top_k, self.left

    def save(self):
        return self.generator.get_state() if self.generator is not None else None

    def restore(self, state) -> None:
        self.generator.set_state(state)


class Server:
    """The served weights and the endpoints' work, on one :class:`HFBackend` (``backend``)."""

    def __init__(self, backend, base_name: str, adapters: dict[str, str] | None = None, *,
                 batch_wait: float = 0.02, api_key: str | None = None, max_loras: int = DEFAULT_MAX_LORAS,
                 limits: Limits | None = None, slice_tokens: int = DEFAULT_SLICE_TOKENS):
        if max_loras < 1:
            raise ValueError(f"--max-loras: must be >= 1 (got {max_loras})")
        self.backend, self.base_name = backend, base_name
        tok = backend.tokenizer
        self.limits = limits or Limits(context=context_length(backend.base.config, tok),
                                       max_token_bytes=max_token_bytes(tok))
        self.roots: dict[str, str] = {}  # served adapter name -> its folder
        self.max_loras = max_loras
        self.resident: OrderedDict[str, None] = OrderedDict()  # the adapters in memory, least recently used first
        self.api_key = api_key
        self.created = int(time.time())
        for name, path in (adapters or {}).items():
            self.roots[name] = str(Path(path).resolve())
        self._resident(list(self.roots)[-max_loras:])  # the others are loaded when first asked for
        self.queue = Scheduler({"generate": self._generate, "score": self._score, "admin": self._admin},
                               batch_wait=batch_wait, max_rows=max(1, int(getattr(backend, "batch_size", 64))),
                               slice_tokens=slice_tokens)

    # -- work done by the scheduler's worker (a thread) ------------------------------------------------------
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

    def _admin(self, jobs, stop=None):
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
        return out, 0

    def _generate(self, units: list[Generation], stop) -> tuple[list, int]:
        """One slice of generation for completions of one key: each unit's result is its Completion, or CONTINUE
        when the slice ended before the completion did (its tokens so far are kept in the unit)."""
        from transformers import StoppingCriteria

        from mafl.backends.hf import RowSampler

        first = units[0]
        if first.adapter is not None:
            self._resident([first.adapter])
        route = self.backend._route(first.adapter)
        s = first.sampling
        sampler = None if s.greedy else RowSampler(s, [], self.backend.device, [u.generator for u in units])
        prompts = [u.prompt + u.tokens for u in units]
        width = max(map(len, prompts))

        class Slice(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                import torch

                return torch.full((input_ids.shape[0],), bool(stop(input_ids.shape[1] - width)), dtype=torch.bool,
                                  device=input_ids.device)

        rows = self.backend.generate_rows(prompts, [route] * len(units), sampler, first.left, Slice())
        eos = self.backend.eos_ids(route[0])
        out = []
        for u, row in zip(units, rows):
            end = next((k for k, t in enumerate(row) if t in eos), None)
            u.tokens += row if end is None else row[: end + 1]
            out.append(self.backend.completion(u.tokens, eos) if end is not None or u.left <= 0 else CONTINUE)
        return out, max((len(r) for r in rows), default=0)

    def _score(self, jobs: list[tuple[list[int], str | None]], stop=None):
        adapter = jobs[0][1]  # one adapter per batch (the scheduler's key)
        if adapter is not None:
            self._resident([adapter])
        return self.backend.token_logprobs([ids for ids, _ in jobs], adapter), 1

    # -- requests --------------------------------------------------------------------------------------------
    def adapter_of(self, model) -> str | None:
        if model == self.base_name:
            return None
        if not isinstance(model, str) or model not in self.roots:
            raise ServeError(404, f"The model `{str(model)[:200]}` does not exist.", "NotFoundError")
        return model

    def models(self) -> dict:
        data = [{"id": self.base_name, "object": "model", "created": self.created, "owned_by": "mafl",
                 "root": self.base_name, "parent": None, "max_model_len": self.limits.context}]
        data += [{"id": n, "object": "model", "created": self.created, "owned_by": "mafl", "root": root,
                  "parent": self.base_name, "max_model_len": self.limits.context}
                 for n, root in sorted(self.roots.items())]
        return {"object": "list", "data": data}

    def _sampling(self, body: dict) -> tuple[dict, int, int | None, int]:
        """The sampling fields of a request, checked: (Sampling's keywords, n, max_tokens or None, seed)."""
        _refuse_unsupported(body)
        _stops(body.get("stop"))
        temperature = number(body, "temperature", 1.0, low=0, high=2)
        top_p = number(body, "top_p", 1.0, low=0, high=1)
        if top_p == 0:
            raise ServeError(400, "top_p: must be > 0 (got 0)")
        top_k = max(number(body, "top_k", 0, int), 0)
        max_tokens = number(body, "max_completion_tokens", None, int, low=1)
        if max_tokens is None:
            max_tokens = number(body, "max_tokens", None, int, low=1)
        n = number(body, "n", 1, int, low=1)
        self.limits.check_n(n)
        return dict(temperature=temperature, top_p=top_p, top_k=top_k), n, max_tokens, seed_of(body)

    async def _prompt_ids(self, messages: list[dict]) -> list[int]:
        from mafl.backends import chat

        self.limits.check_text_size(sum(len(m["content"].encode("utf-8")) + len(m["role"]) for m in messages))
        try:
            return await asyncio.to_thread(chat.prompt_ids, self.backend.tokenizer, messages)
        except Exception as e:  # noqa: BLE001 - the model's chat template refuses them (roles, order)
            raise ServeError(400, f"messages: the model's chat template cannot render them ({type(e).__name__}: "
                                  f"{one_line(e, 200)})") from None

    async def _complete(self, ids: list[int], adapter, sampling: dict, n: int, max_tokens: int | None, seed: int,
                        owner, what: str) -> list[Completion]:
        import torch

        budget = self.limits.max_tokens(len(ids), max_tokens, what)
        s = Sampling(**sampling, max_new_tokens=budget, seed=seed)
        futures = []
        for i in range(n):
            g = None
            if not s.greedy:  # each completion samples with a generator of its own, seeded by the request's seed
                g = torch.Generator(device=self.backend.device).manual_seed(seed if i == 0 else request_seed(seed, i))
            futures.append(self.queue.submit("generate", (), Generation(list(ids), adapter, s, g), owner))
        try:
            return await asyncio.gather(*futures)
        finally:
            for f in futures:  # one failed or the client went away: the others' work is cancelled too
                f.cancel()

    def _choices(self, completions: list[Completion], stops: list[str], chat: bool) -> list[dict]:
        choices = []
        for i, c in enumerate(completions):
            text, stopped = _cut_at_stop(c.text, stops)
            finish = "stop" if c.finished or stopped else "length"
            if chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                                "finish_reason": finish})
            else:
                choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": finish})
        return choices

    async def chat(self, body: dict) -> dict:
        if body.get("stream"):
            raise ServeError(400, "stream: mafl serve answers whole responses only")
        adapter = self.adapter_of(body.get("model"))
        messages = messages_of(body.get("messages"))
        sampling, n, max_tokens, seed = self._sampling(body)
        ids = await self._prompt_ids(messages)
        completions = await self._complete(ids, adapter, sampling, n, max_tokens, seed, self.queue.owner(), "messages")
        completion_tokens = sum(c.num_tokens for c in completions)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"), "choices": self._choices(completions, _stops(body.get("stop")), True),
                "usage": {"prompt_tokens": len(ids), "completion_tokens": completion_tokens,
                          "total_tokens": len(ids) + completion_tokens}}

    async def completions(self, body: dict) -> dict:
        """Text generation from a prompt, or (with ``prompt_logprobs``) the prompt's log-probabilities, vLLM's
        format, and nothing generated."""
        if body.get("stream"):
            raise ServeError(400, "stream: mafl serve answers whole responses only")
        adapter = self.adapter_of(body.get("model"))
        prompt = body.get("prompt")
        tok = self.backend.tokenizer
        if isinstance(prompt, list) and len(prompt) == 1 and not isinstance(prompt[0], int):
            prompt = prompt[0]  # one prompt in a list
        if isinstance(prompt, str):
            unicode(prompt, "prompt")
            self.limits.check_text_size(len(prompt.encode("utf-8")), "prompt")
            ids = list((await asyncio.to_thread(tok, prompt, add_special_tokens=False))["input_ids"])
        elif (isinstance(prompt, list) and prompt
              and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)):
            ids = prompt
            if max(ids) >= len(tok) or min(ids) < 0:
                raise ServeError(400, f"prompt: token ids must be within [0, {len(tok)})")
        else:
            raise ServeError(400, "prompt: one text or one list of token ids")
        if not ids:
            raise ServeError(400, "prompt: empty (no token to score or to continue)")
        if len(ids) > self.limits.context:
            raise ServeError(400, f"prompt: this model's maximum context length is {self.limits.context} tokens; the "
                                  f"prompt has {len(ids)} tokens")
        created, rid = int(time.time()), f"cmpl-{uuid.uuid4().hex}"
        if body.get("prompt_logprobs") is not None:
            number(body, "prompt_logprobs", None, int, low=0)
            logprobs, ranks = await self.queue.submit("score", (adapter,), (ids, adapter), self.queue.owner())
            entries = [None] + [{str(t): {"logprob": lp, "rank": rk, "decoded_token": tok.decode([t])}}
                                for t, lp, rk in zip(ids[1:], logprobs[1:], ranks[1:])]
            return {"id": rid, "object": "text_completion", "created": created, "model": body.get("model"),
                    "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "length",
                                 "prompt_logprobs": entries}],
                    "usage": {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}}
        sampling, n, max_tokens, seed = self._sampling(body)
        completions = await self._complete(ids, adapter, sampling, n, max_tokens, seed, self.queue.owner(), "prompt")
        completion_tokens = sum(c.num_tokens for c in completions)
        return {"id": rid, "object": "text_completion", "created": created, "model": body.get("model"),
                "choices": self._choices(completions, _stops(body.get("stop")), False),
                "usage": {"prompt_tokens": len(ids), "completion_tokens": completion_tokens,
                          "total_tokens": len(ids) + completion_tokens}}

    async def load(self, body: dict) -> str:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            raise ServeError(400, "lora_name and lora_path are required")
        if not isinstance(name, str) or not isinstance(path, str):
            raise ServeError(400, "lora_name and lora_path: strings")
        if name == self.base_name:
            raise ServeError(400, f"{name!r} is the base model's name")
        if name in self.roots:
            raise ServeError(400, f"The lora adapter '{name}' has already been loaded.")
        try:
            found = Path(path).is_dir()
        except (OSError, ValueError):  # a name too long, a NUL byte
            found = False
        if not found:
            raise ServeError(404, f"no adapter folder at {path[:200]}", "NotFoundError")
        if not (is_adapter_folder(path) or (Path(path) / "config.json").is_file()):
            raise ServeError(400, f"lora_path: {path} is neither a LoRA adapter folder (adapter_config.json) nor a "
                                  "model folder (config.json)")
        try:
            await self.queue.submit("admin", (), ("load", (name, path)), self.queue.owner())
        except Exception as e:  # noqa: BLE001 - weights that do not fit the base model, a broken file
            raise ServeError(400, f"lora_path: the weights in {path} cannot be loaded onto {self.base_name} "
                                  f"({type(e).__name__}: {one_line(e, 200)})") from None
        return f"Success: LoRA adapter '{name}' added successfully."

    async def unload(self, body: dict) -> str:
        name = body.get("lora_name")
        if not isinstance(name, str) or name not in self.roots:
            raise ServeError(404, f"The lora adapter '{str(name)[:200]}' cannot be found.", "NotFoundError")
        await self.queue.submit("admin", (), ("unload", name), self.queue.owner())
        return f"Success: LoRA adapter '{name}' removed successfully."

    def authorized(self, header: str | None) -> bool:
        if self.api_key is None:
            return True
        given = (header or "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), self.api_key.encode())

    def metrics_text(self) -> str:
        """The scheduler's counters in Prometheus' text format."""
        lines = []
        for name, value in self.queue.metrics().items():
            kind = "gauge" if name in ("units_waiting", "units_running", "max_wait_steps") else "counter"
            metric = f"mafl_serve_{name}" + ("_total" if kind == "counter" else "")
            lines += [f"# TYPE {metric} {kind}", f"{metric} {value}"]
        return "\n".join(lines) + "\n"


async def _until_disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def answered(request: Request, work):
    """``await work``, cancelled (a 499 in the log; the client is not there to read it) if the client goes away."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_until_disconnected(request.receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        try:
            await task
        except BaseException:  # noqa: BLE001 - cancelled, or it failed on its way out
            pass
        raise ServeError(CLIENT_GONE, "the client went away: its work was cancelled", "client_gone")
    return task.result()


def create_app(server: Server):
    """The FastAPI application of ``server`` (wrap it in :class:`mafl.serve.guard.Guard` to serve it)."""
    async def lifespan(app):
        server.queue.start()
        yield
        await server.queue.stop()

    app = FastAPI(title="mafl serve", lifespan=lifespan)

    def error(status: int, message: str, kind: str) -> JSONResponse:
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")  # what a request quoted may not be
        return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}},
                            status_code=status)

    @app.exception_handler(ServeError)
    async def _serve_error(request, e: ServeError):
        return error(e.status, e.message, e.kind)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e: StarletteHTTPException):
        return error(e.status_code, str(e.detail), "NotFoundError" if e.status_code == 404 else "invalid_request_error")

    @app.exception_handler(Exception)
    async def _internal_error(request, e: Exception):
        return error(500, f"{type(e).__name__}: {one_line(e, 300)}", "internal_error")

    async def body_of(request: Request) -> dict:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested past Python's recursion limit
            raise ServeError(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise ServeError(400, "the request body is not a JSON object")
        return body

    @app.get("/health")
    async def health():
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(server.metrics_text())

    @app.get("/v1/models")
    async def models():
        return server.models()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await answered(request, server.chat(await body_of(request)))

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answered(request, server.completions(await body_of(request)))

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(request: Request):
        return PlainTextResponse(await server.load(await body_of(request)))

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(request: Request):
        return PlainTextResponse(await server.unload(await body_of(request)))

    return app
