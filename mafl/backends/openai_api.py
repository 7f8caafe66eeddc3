"""Generation through any OpenAI-compatible server (``backend=openai``): OpenAI itself, ``vllm serve``, SGLang,
llama.cpp's server, Ollama, or ``mafl serve``, with the official ``openai`` client (async).

* **Where.** ``backend.base_url`` (null: ``$OPENAI_BASE_URL``, else OpenAI's); the API key is read from the
  environment variable that ``backend.api_key_env`` names (``OPENAI_API_KEY``), never from the config, so it
  reaches no file, log or tracker; a server without keys gets a placeholder. Error messages never hold the key.
* **Requests.** Every request of a call (a debate round: every agent, every problem) is in flight at once, up to
  ``backend.max_concurrency``; a request that fails with 408, 409, 429 or 5xx, a dropped connection or a timeout
  is sent again ``backend.max_retries`` times with a back-off (or the server's ``retry-after``), each attempt
  bounded by ``backend.timeout``, and every retry is shown on the console (:mod:`mafl.backends.retries`); a busy
  server (timeouts, 429, 503) gets fewer requests in flight and time for the copies that timed out, and a timeout
  while it answers others is not counted against the retries (:class:`~mafl.backends.retries.BusyGate`). A request
  that still fails raises :class:`mafl.errors.RunError`, one line naming the server and the status: the run stops,
  the debate chunks it finished are kept, and the same command resumes. An answer that is not an OpenAI-compatible
  one (no choices, an HTML page) is a RunError too.
* **Sampling.** temperature, top_p, max_tokens and a seed per request (``request_seed``: the servers that honour
  seeds give the same answers again); temperature 0 is greedy; ``top_k`` (not in OpenAI's API) is sent only when
  set, in the request's extra fields, as vLLM takes it; ``backend.extra_body`` adds any other field.
* **Models.** The base model is ``backend.base_model`` (null: the run's ``model.path``, the name ``vllm serve``
  and ``mafl serve`` give it). ``load_adapter(name, folder)`` makes ``name`` speak with the server's model for
  that folder: a fine-tuned API model (``finetune=openai`` writes its id in ``<folder>/api_model.json``), an
  adapter the server already serves (its ``/v1/models`` entry has the folder as ``root``, as vLLM's
  ``--lora-modules NAME=PATH`` and ``mafl serve`` list them), or else one loaded at run time through vLLM's
  ``/v1/load_lora_adapter`` endpoint (``mafl serve`` has it; vLLM with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``).
  A server that answers 404 for an adapter's model (restarted, it lost the adapters loaded at run time) gets the
  adapter again (listed or loaded, as above) and the request is sent again.
* **Likelihoods.** ``score`` asks ``/v1/completions`` for the prompt log-probabilities of prompt + response as
  token ids (vLLM's ``prompt_logprobs``; ``mafl serve`` answers it too), tokenized locally with
  :mod:`mafl.backends.chat`. A server that gives none (OpenAI, Ollama, llama.cpp), or a model without a local
  tokenizer (``backend.tokenizer``), raises :class:`ScoringUnavailable`: the KL and NLL metrics are reported as
  unavailable, with the reason, and every other metric is measured.
* **Usage.** Requests and tokens per stage and model go to ``usage.json`` (:mod:`mafl.backends.usage`), with
  their cost where ``backend.prices`` has the model.
"""
from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Sequence

from mafl.backends import chat
from mafl.backends.base import (Capabilities, Completion, GenerationRequest, Score, ScoringRequest,
                                ScoringUnavailable, request_seed)
from mafl.backends.retries import BusyGate, RetryReport, backoff, retryable_status
from mafl.backends.usage import UsageLedger
from mafl.errors import ConfigError, RunError, integer, number, one_line, plain
from mafl.models import is_adapter_folder

INSTALL_HINT = "pip install 'mafl[api]'"
API_MODEL_FILE = "api_model.json"  # in a model's folder: {"model": <the API's id of the fine-tuned model>}
OPENAI_URL = "https://api.openai.com/v1"
RETRIED = "retried"  # a status the client retries (408, 409, 429, >= 500)


def import_openai():
    if importlib.util.find_spec("openai") is None:
        raise ImportError(f"backend=openai needs the openai client: {INSTALL_HINT}")
    import openai

    return openai


class OpenAIBackend:
    capabilities = Capabilities(score=True, full_models=False)
    # backend.* keys that say how to reach the server, not what it answers: they may change on resume
    operational_keys = ("base_url", "api_key_env", "max_concurrency", "timeout", "max_retries", "prices")

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "auto",
        device: str = "cpu",
        chat_template: str | None = None,
        trust_remote_code: bool = False,
        progress: bool = False,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        base_model: str | None = None,
        tokenizer: str | None = None,
        max_concurrency: int = 128,
        timeout: float = 120.0,
        max_retries: int = 3,
        prices: dict | None = None,
        extra_body: dict | None = None,
    ):
        """``dtype`` and ``device`` are accepted for the common backend signature (the server decides them)."""
        self._openai = import_openai()
        self.base_url = str(base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
        self._key = os.environ.get(api_key_env) if api_key_env else None
        if not self._key:
            if self.base_url == OPENAI_URL:
                raise ConfigError(f"backend.api_key_env: the environment variable {api_key_env} holds no API key "
                                  f"for {OPENAI_URL}")
            self._key = "EMPTY"  # a local server without keys takes any
        self.base_model = str(base_model or model_path)
        self.progress = progress
        self.max_concurrency = int(max_concurrency)
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.extra_body = dict(plain(extra_body) or {})
        self.usage = UsageLedger(plain(prices) or {})
        source = tokenizer or (model_path if Path(str(model_path)).is_dir() else None)
        self.tokenizer = None
        if source:
            from mafl.models import load_tokenizer

            self.tokenizer = load_tokenizer(str(source), chat_template=chat_template,
                                            trust_remote_code=trust_remote_code)
        self._served: dict[str, str] = {}  # adapter name -> the server's model id
        self._folders: dict[str, Path] = {}  # adapter name -> its folder (served again after a server's 404)
        self._reloads: dict[str, asyncio.Future] = {}  # adapters being served again now
        self.retries = RetryReport(self.base_url)
        self.gate = BusyGate(self.max_concurrency, self.timeout)  # attempts in flight, fewer while the server is busy
        self._unscorable: str | None = None  # why score() cannot be answered, once known
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mafl-openai", daemon=True)
        self._thread.start()
        self._client = None

    @staticmethod
    def check_options(options: dict) -> None:
        """The config's own checks (before any work): no API key in the config, sane bounds."""
        if "api_key" in options:
            raise ConfigError("backend.api_key: a key in the config would be saved in config.yaml; put it in the "
                              "environment variable that backend.api_key_env names (OPENAI_API_KEY)")
        for key in ("max_concurrency", "max_retries"):
            if key in options:
                integer(options, key, "backend", low=1 if key == "max_concurrency" else 0)
        if "timeout" in options:
            number(options, "timeout", "backend", low=0.0, strict_low=True)
        prices = options.get("prices") or {}
        if not isinstance(prices, dict) or any(not isinstance(p, dict) or set(p) - {"prompt", "completion"}
                                               for p in prices.values()):
            raise ConfigError("backend.prices: {model: {prompt: USD per 1M tokens, completion: USD per 1M tokens}}")

    # -- the event loop in its own thread, so the backend works from any caller (a notebook's loop included) ---
    def _run(self, coro, bar=None, counter: list | None = None):
        future: Future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        shown = 0
        while True:
            try:
                result = future.result(timeout=0.2)
                break
            except TimeoutError:
                pass
            finally:
                if bar is not None and counter is not None and counter[0] > shown:
                    bar.update(counter[0] - shown)
                    shown = counter[0]
        return result

    def client(self):
        if self._client is None:
            self._client = self._openai.AsyncOpenAI(base_url=self.base_url, api_key=self._key,
                                                    timeout=self.timeout, max_retries=0)  # retried by _send
        return self._client

    def redact(self, text: str) -> str:
        """``text`` without the API key (a server may quote it in an error)."""
        if self._key and len(self._key) >= 4 and self._key != "EMPTY":
            text = text.replace(self._key, "***")
        return text

    def _failure(self, e: Exception, what: str, model: str) -> Exception:
        """A one-line RunError for a request that failed (after the client's retries where they apply)."""
        o = self._openai
        if isinstance(e, o.APIStatusError):
            status = e.status_code
            retried = status in (408, 409, 429) or status >= 500
            body = e.body.get("message", e.body) if isinstance(e.body, dict) else (e.body or e.message)
            msg = (f"backend=openai: {self.base_url} answered {status} to a {what} request for model {model}"
                   + (f" (after {self.max_retries} retries)" if retried else "") + f": {one_line(body)}")
        elif isinstance(e, (o.APIConnectionError, o.APITimeoutError)):
            msg = (f"backend=openai: no answer from {self.base_url} to a {what} request for model {model} after "
                   f"{self.max_retries} retries ({type(e).__name__}: {one_line(e)})")
        else:
            return e
        return RunError(self.redact(msg) + "; the finished debate chunks are kept: the same command resumes")

    async def _all(self, coros: list, counter: list) -> list:
        """Run every coroutine, at most ``max_concurrency`` at once; the first failure cancels the rest."""
        gate = asyncio.Semaphore(self.max_concurrency)

        async def one(coro):
            try:
                async with gate:
                    result = await coro
            finally:
                coro.close()  # one cancelled while it waited for the gate never started: closed, not left unawaited
            counter[0] += 1
            return result

        tasks = [asyncio.ensure_future(one(c)) for c in coros]
        try:
            return await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    def _bar(self, n: int):
        from mafl import progress

        if self.progress and n > 1 and progress.active():
            return progress.stage("requests", total=n, unit="request")
        return None

    def _call(self, coros: list, n: int) -> list:
        counter, bar = [0], self._bar(n)
        try:
            return self._run(self._all(coros, counter), bar, counter)
        finally:
            if bar is not None:
                bar.close()
            self.usage.save()

    # -- the society's weights -------------------------------------------------------------------------------
    def served(self, adapter: str | None) -> str:
        """The server's model id of ``adapter`` (None: the base model)."""
        if adapter is None:
            return self.base_model
        if adapter not in self._served:
            raise KeyError(f"no adapter named {adapter!r} is loaded (loaded: {self.adapters()})")
        return self._served[adapter]

    def load_adapter(self, name: str, path: str) -> None:
        folder = Path(path).expanduser().resolve()
        if (folder / API_MODEL_FILE).exists():
            self._served[name] = str(json.loads((folder / API_MODEL_FILE).read_text())["model"])
            return
        if not is_adapter_folder(folder):
            if not folder.exists():
                raise FileNotFoundError(f"no model folder at {path}")
            raise NotImplementedError(
                f"{path} holds a whole fine-tuned model (finetune.mode=full); backend=openai serves LoRA adapters "
                "(and API fine-tuned models): use backend=hf for full fine-tuning")
        self._served[name] = self._run(self._serve_adapter(name, folder))
        self._folders[name] = folder

    async def _serve_adapter(self, name: str, folder: Path) -> str:
        """The server's id of the adapter in ``folder``: one it lists with that root, or one loaded now."""
        o = self._openai
        try:
            for _ in range(2):
                models = await self._send(lambda _: self.client().models.list(), None, "list-models")
                for m in models.data:
                    root = getattr(m, "root", None) or (m.model_extra or {}).get("root")
                    if root and Path(str(root)).expanduser().resolve() == folder and m.id != self.base_model:
                        return m.id
                served = f"{name}-{hashlib.sha256(str(folder).encode()).hexdigest()[:10]}"
                try:
                    await self._send(lambda _: self.client().post(
                        "/load_lora_adapter", cast_to=str, body={"lora_name": served, "lora_path": str(folder)}),
                        None, "load-adapter")
                    return served
                except o.BadRequestError:  # already loaded (by an earlier process of the run): list again
                    continue
        except o.NotFoundError:
            raise RunError(self.redact(
                f"backend=openai: {self.base_url} does not serve the adapter {folder} and cannot load adapters at "
                "run time; serve it (vLLM: `mafl serve RUN --vllm-command` prints the command) or use a server with "
                "/v1/load_lora_adapter (mafl serve; vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)")) from None
        except (o.APIStatusError, o.APIConnectionError) as e:
            raise self._failure(e, "load-adapter", name) from None
        raise RunError(f"backend=openai: {self.base_url} neither lists nor loads the adapter {folder}")

    async def _serve_again(self, name: str) -> None:
        """``name``'s adapter once more, after a 404 for its model: one request does it, the others wait."""
        if name not in self._reloads:
            async def again():
                self._served[name] = await self._serve_adapter(name, self._folders[name])

            self._reloads[name] = asyncio.ensure_future(again())
        try:
            await asyncio.shield(self._reloads[name])
        finally:
            if self._reloads.get(name) is not None and self._reloads[name].done():
                self._reloads.pop(name, None)

    async def _send(self, call, adapter: str | None, what: str):
        """``await call(model_id)`` with the retries of :mod:`mafl.backends.retries`; a 404 for a runtime adapter
        serves it again (once) and sends the request again. Errors the retries cannot help are raised as they are."""
        o = self._openai
        attempt, served_again = 0, False
        while True:
            served = self.served(adapter)
            ticket = await self.gate.acquire()
            outcome = "failed"
            try:
                result = await call(served)
                outcome = "ok"
                return result
            except o.NotFoundError:
                if adapter is None or adapter not in self._folders or served_again:
                    raise
                served_again = True
                outcome = None  # its place is given back first: serving the adapter again takes one
                await self.gate.release(ticket, "failed")
                await self._serve_again(adapter)
            except (o.APIStatusError, o.APIConnectionError) as e:
                status = getattr(e, "status_code", None)
                kind = "busy" if isinstance(e, o.APITimeoutError) or status in (429, 503) else "failed"
                outcome = None  # released here
                busy = await self.gate.release(ticket, kind)
                if (status is not None and not retryable_status(status)) or (attempt >= self.max_retries and not busy):
                    raise
                attempt += not busy
                response = getattr(e, "response", None)
                headers = response.headers if status is not None and response is not None else None
                delay = backoff(max(attempt, 1), headers)
                reason = f"{status} to a {what} request" if status is not None else f"{type(e).__name__} on a {what} request"
                if busy:
                    reason += " (the server is busy answering others)"
                if self.gate.limit < self.gate.maximum:
                    reason += f"; at most {self.gate.limit} requests in flight now"
                delay = max(delay, self.gate.held())  # what the gate holds it for anyway, said on the console
                self.retries.retry(reason, attempt, self.max_retries, delay, counted=not busy)
                await asyncio.sleep(delay)
            finally:
                if outcome is not None:
                    await self.gate.release(ticket, outcome)

    def unload(self, name: str) -> None:
        """Stop speaking with ``name``'s model (the server keeps serving it: it may be shared)."""
        self._served.pop(name, None)
        self._folders.pop(name, None)

    def adapters(self) -> list[str]:
        return sorted(self._served)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._client is not None:
            try:
                self._run(self._client.close())
            except Exception:  # noqa: BLE001 - closing a client that lost its server
                pass
            self._client = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    # -- generation ------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Completions in the order of ``requests``, every request in flight at once (up to the bound)."""
        for r in requests:  # an unknown adapter fails before any request
            self.served(r.adapter)
        coros = [self._chat(r, request_seed(r.sampling.seed, i)) for i, r in enumerate(requests)]
        return self._call(coros, len(requests))

    def _not_an_answer(self, resp, what: str, model: str) -> RunError | None:
        """A RunError for a response that is not an OpenAI-compatible answer with choices (an HTML page, a proxy's
        page, ``"choices": []``), else None."""
        choices = getattr(resp, "choices", None)
        if isinstance(choices, list) and choices:
            return None
        shown = one_line(resp if isinstance(resp, str) else f"choices: {choices!r}", 120)
        return RunError(self.redact(f"backend=openai: {self.base_url} answered a {what} request for model {model} "
                                    f"with no choice ({shown}): is backend.base_url an OpenAI-compatible server's "
                                    "/v1 address?"))

    async def _chat(self, r: GenerationRequest, seed: int) -> Completion:
        s = r.sampling
        extra = dict(self.extra_body)
        if s.top_k > 0 and not s.greedy:
            extra["top_k"] = s.top_k

        def call(served):
            return self.client().chat.completions.create(
                model=served, messages=[dict(m) for m in r.messages], max_tokens=s.max_new_tokens, seed=seed, n=1,
                temperature=0.0 if s.greedy else s.temperature, top_p=1.0 if s.greedy else s.top_p,
                extra_body=extra or None)

        try:
            resp = await self._send(call, r.adapter, "chat completion")
        except self._openai.OpenAIError as e:
            raise self._failure(e, "chat completion", self.served(r.adapter)) from None
        served = self.served(r.adapter)
        if (bad := self._not_an_answer(resp, "chat completion", served)) is not None:
            raise bad
        choice = resp.choices[0]
        text = (choice.message.content or "").strip()
        usage = resp.usage
        completion_tokens = usage.completion_tokens if usage is not None else 0
        self.usage.add(r.adapter or "base", served, usage.prompt_tokens if usage is not None else 0,
                       completion_tokens)
        return Completion(text=text, num_tokens=int(completion_tokens), finished=choice.finish_reason != "length")

    # -- likelihood ------------------------------------------------------------------------------------------
    def score(self, requests: Sequence[ScoringRequest]) -> list[Score]:
        """Sum of the log-probabilities of each response (with its closing eos) given its prompt, from the
        server's prompt log-probabilities of prompt + response; ScoringUnavailable where the server gives none."""
        if self.tokenizer is None:
            self._unscorable = (f"backend=openai has no tokenizer for {self.base_model} to send token ids to score "
                                "(set backend.tokenizer)")
        if self._unscorable:
            raise ScoringUnavailable(self._unscorable)
        for r in requests:
            self.served(r.adapter)
        pairs = [(chat.prompt_ids(self.tokenizer, r.messages), chat.response_ids(self.tokenizer, r.response))
                 for r in requests]
        coros = [self._score_one(p, resp, r.adapter) for (p, resp), r in zip(pairs, requests)]
        return self._call(coros, len(requests))

    async def _score_one(self, prompt: list[int], response: list[int], adapter: str | None) -> Score:
        o = self._openai
        ids = prompt + response

        def call(served):
            return self.client().completions.create(
                model=served, prompt=ids, max_tokens=1, temperature=1.0, extra_body={"prompt_logprobs": 1})

        served = self.served(adapter)
        try:
            resp = await self._send(call, adapter, "prompt log-probability")
            served = self.served(adapter)
        except (o.BadRequestError, o.NotFoundError, o.UnprocessableEntityError) as e:
            self._unscorable = self.redact(f"{self.base_url} answered {e.status_code} to a prompt log-probability "
                                           f"request: {one_line(e.message)}")
            raise ScoringUnavailable(self._unscorable) from None
        except o.OpenAIError as e:
            raise self._failure(e, "prompt log-probability", served) from None
        if (bad := self._not_an_answer(resp, "prompt log-probability", served)) is not None:
            raise bad
        choice = resp.choices[0]
        entries = getattr(choice, "prompt_logprobs", None)
        if entries is None:
            entries = (getattr(choice, "model_extra", None) or {}).get("prompt_logprobs")
        if not entries or len(entries) < len(ids):
            self._unscorable = (f"{self.base_url} returns no prompt log-probabilities (prompt_logprobs: vLLM and "
                                "mafl serve do; OpenAI, Ollama and llama.cpp do not)")
            raise ScoringUnavailable(self._unscorable)
        usage = resp.usage
        self.usage.add(adapter or "base", served, usage.prompt_tokens if usage is not None else len(ids),
                       usage.completion_tokens if usage is not None else 0)
        each = []
        for k in range(len(prompt), len(ids)):
            entry = entries[k]
            value = entry.get(str(ids[k]), entry.get(ids[k])) if isinstance(entry, dict) else None
            if value is None:
                raise ScoringUnavailable(f"{self.base_url}'s prompt log-probabilities lack the prompt's own tokens")
            each.append(float(value["logprob"] if isinstance(value, dict) else value))
        return Score(logprob=sum(each), num_tokens=len(response), token_logprobs=tuple(each))

    def __del__(self):  # a backend dropped without close(): stop its thread
        try:
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._loop.stop)
        except Exception:  # noqa: BLE001
            pass
