"""Generation with transformers: batched, KV cache, left padding, seeded sampling, and one base model in memory
with any number of LoRA adapters, mixed freely within a batch (peft's ``adapter_names``).

Sampling draws each row's tokens from a generator of its own, seeded by its request (``request_seed`` of the
request's seed and its place in the call, or, for ``mafl serve``, the seed of the HTTP request as given): a
completion depends on its seed and its prompt only, never on the requests batched beside it.

A forward pass that raises (an empty row, out of memory on a GPU) leaves no peft hook behind: peft registers its
``adapter_names`` hooks for the length of one call and, when the call raises, does not remove them, which would
break every later batch of another size.

A model fine-tuned in full (``finetune.mode=full``) cannot share the base weights; it is loaded as a model of
its own and its requests are batched separately.
"""
from __future__ import annotations

import contextlib
import itertools
from typing import Sequence

import torch

from mafl.backends import chat
from mafl.backends.base import Capabilities, Completion, GenerationRequest, Score, ScoringRequest, request_seed
from mafl.models import is_adapter_folder, load_causal_lm, load_tokenizer, resolve_device

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


PEFT_CALL_HOOKS = ("_adapter_names_pre_forward_hook", "_alora_offsets_pre_forward_hook")


@contextlib.contextmanager
def no_stale_hooks(model):
    """Run a forward or generate call of ``model``; if it raises, remove the per-call hooks peft left behind."""
    try:
        yield
    except BaseException:
        for module in model.modules():
            for key, hook in list(module._forward_pre_hooks.items()):
                if getattr(getattr(hook, "func", None), "__name__", None) in PEFT_CALL_HOOKS:
                    del module._forward_pre_hooks[key]
                    module._forward_pre_hooks_with_kwargs.pop(key, None)
        raise


class TopKTopP:
    """transformers' ``TopKLogitsWarper`` then ``TopPLogitsWarper``, with the nucleus found among the top-k tokens
    instead of by sorting the whole vocabulary at every step (for a 50k vocabulary and a batch of 32 rows, the sort
    took longer than the model's forward pass). The tokens it keeps are those the two warpers keep; a row whose
    top-k values tie (where the order of equal values could decide) goes the warpers' own way."""

    def __init__(self, top_k: int, top_p: float):
        from transformers import TopKLogitsWarper, TopPLogitsWarper

        self.top_k, self.top_p = int(top_k), float(top_p)
        self.exact = [TopKLogitsWarper(self.top_k), TopPLogitsWarper(self.top_p)]

    def __call__(self, input_ids, scores):
        k = min(self.top_k, scores.size(-1))
        values, index = torch.topk(scores, k)  # descending
        kept = scores >= values[..., -1:]  # TopKLogitsWarper keeps every token that ties with the k-th
        if k == scores.size(-1) or bool((kept.sum(-1) > k).any()) or bool((values[:, 1:] == values[:, :-1]).any()):
            for warper in self.exact:
                scores = warper(input_ids, scores)
            return scores
        ascending = values.flip(-1)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - self.top_p)
        remove[..., -1] = False  # at least one token
        dropped = torch.ones_like(scores, dtype=torch.bool)
        dropped.scatter_(1, index.flip(-1), remove)
        return scores.masked_fill(dropped, -float("inf"))


class RowSampler:
    """A logits processor that samples every row's next token with the row's own generator (after
    transformers' own temperature, top-k and top-p warpers) and leaves only that token possible, so that
    greedy search picks it: a row's tokens depend on its seed and its logits alone."""

    def __init__(self, sampling, seeds: Sequence[int], device, generators: Sequence | None = None):
        """``generators``: the rows' generators as they are (``mafl serve`` continues a row's generation in
        slices with the same generator), instead of new ones seeded by ``seeds``."""
        from transformers import (LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                                  TopPLogitsWarper)

        warpers = []
        if sampling.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_k > 0 and sampling.top_p < 1.0:
            warpers.append(TopKTopP(sampling.top_k, sampling.top_p))
        elif sampling.top_k > 0:
            warpers.append(TopKLogitsWarper(sampling.top_k))
        elif sampling.top_p < 1.0:
            warpers.append(TopPLogitsWarper(sampling.top_p))
        self.warpers = LogitsProcessorList(warpers)
        self.generators = (list(generators) if generators is not None
                           else [torch.Generator(device=device).manual_seed(int(s)) for s in seeds])

    def __call__(self, input_ids, scores):
        probs = torch.softmax(self.warpers(input_ids, scores).float(), dim=-1)
        picks = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)])
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(1, picks[:, None], 0.0)


class HFBackend:
    capabilities = Capabilities(score=True, full_models=True)

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        batch_size: int = 64,
        chat_template: str | None = None,
        trust_remote_code: bool = False,
        generate_kwargs: dict | None = None,
        group_adapters: bool = True,
        progress: bool = False,
    ):
        self.model_path = model_path
        self.device = resolve_device(device)
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.trust_remote_code = trust_remote_code
        self.generate_kwargs = dict(generate_kwargs or {})
        self.progress = progress
        # batch each model's requests apart (peft's plain LoRA path) rather than mixing adapters in a batch
        self.group_adapters = bool(group_adapters)
        self.tokenizer = load_tokenizer(model_path, chat_template=chat_template, trust_remote_code=trust_remote_code)
        self.base = load_causal_lm(model_path, dtype=dtype, device=self.device, trust_remote_code=trust_remote_code)
        self.peft = None  # the PeftModel wrapping self.base once an adapter is loaded
        self.full_models: dict[str, torch.nn.Module] = {}

    # -- the society's weights -------------------------------------------------------------------------------
    def load_adapter(self, name: str, path: str) -> None:
        """Load ``name`` from ``path``: a LoRA adapter folder, or a whole fine-tuned model folder."""
        if name == BASE:
            raise ValueError(f"{BASE!r} is reserved for the base model")
        self.unload(name)
        if not is_adapter_folder(path):
            self.full_models[name] = load_causal_lm(
                path, dtype=self.dtype, device=self.device, trust_remote_code=self.trust_remote_code
            )
            return
        from peft import PeftModel

        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base, path, adapter_name=name, is_trainable=False)
            self.peft.eval()
        else:
            self.peft.load_adapter(path, adapter_name=name, is_trainable=False)

    def unload(self, name: str) -> None:
        self.full_models.pop(name, None)
        if self.peft is not None and name in self.peft.peft_config:
            if len(self.peft.peft_config) == 1:
                self.base = self.peft.unload()  # back to the bare base model
                self.peft = None
            else:
                if self.peft.active_adapter == name:
                    other = next(a for a in self.peft.peft_config if a != name)
                    self.peft.set_adapter(other)
                self.peft.delete_adapter(name)

    def adapters(self) -> list[str]:
        lora = list(self.peft.peft_config) if self.peft is not None else []
        return sorted(lora + list(self.full_models))

    def lend_base(self):
        """The bare base model, every adapter unloaded (load them again afterwards): LoRA fine-tunes train on it
        instead of a second copy (:class:`mafl.finetune.finetune_one.SharedBase` puts it back as it was)."""
        for name in self.adapters():
            self.unload(name)
        return self.base

    def close(self) -> None:
        self.full_models.clear()
        self.peft = None
        self.base = None

    @contextlib.contextmanager
    def _only(self, name: str):
        """Run the PeftModel as one adapter (or, for ``__base__``, none): peft's plain LoRA path, which is
        faster than its mixed-batch path when a whole batch belongs to one model."""
        if name == BASE:
            with self.peft.disable_adapter():
                yield
        else:
            self.peft.set_adapter(name)
            yield

    # -- prompts ---------------------------------------------------------------------------------------------
    def prompt_ids(self, messages) -> list[int]:
        return chat.prompt_ids(self.tokenizer, messages)

    def _route(self, adapter: str | None):
        """(model to run, adapter name to pass in a mixed batch or None)."""
        if adapter is None:
            return (self.peft or self.base), (BASE if self.peft is not None else None)
        if adapter in self.full_models:
            return self.full_models[adapter], None
        if self.peft is None or adapter not in self.peft.peft_config:
            raise KeyError(f"no adapter named {adapter!r} is loaded (loaded: {self.adapters()})")
        return self.peft, adapter

    def _pad_left(self, rows: list[list[int]]):
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- generation ------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Completions in the order of ``requests``; the ``i``-th request samples with ``request_seed(seed, i)``
        (see :meth:`generate_seeded`)."""
        return self.generate_seeded(requests, [request_seed(r.sampling.seed, i) for i, r in enumerate(requests)])

    def generate_seeded(self, requests: Sequence[GenerationRequest], seeds: Sequence[int]) -> list[Completion]:
        """Completions in the order of ``requests``, ``requests[i]`` sampled with a generator seeded by ``seeds[i]``
        (``mafl serve``: each HTTP request's own seed). Requests are grouped by model instance and sampling
        settings, sorted by prompt length and cut into batches; a request's completion depends on its seed and
        prompt only."""
        prompts = [self.prompt_ids(r.messages) for r in requests]
        routes = [self._route(r.adapter) for r in requests]
        groups: dict[tuple, list[int]] = {}
        for i, (r, (model, _)) in enumerate(zip(requests, routes)):
            s = r.sampling
            adapter = r.adapter if self.group_adapters else None
            key = (id(model), adapter, s.greedy, s.temperature, s.top_p, s.top_k, s.max_new_tokens)
            groups.setdefault(key, []).append(i)
        out: list[Completion | None] = [None] * len(requests)
        batches = []
        for key, idx in groups.items():
            idx.sort(key=lambda i: (-len(prompts[i]), i))
            batches += [idx[j:j + self.batch_size] for j in range(0, len(idx), self.batch_size)]
        from mafl import progress

        bar = None
        if self.progress and len(batches) > 1 and progress.active():  # a row of the stage's display
            bar = progress.stage("generate", total=len(requests), unit="response")
        for b, batch in enumerate(batches):
            for i, c in zip(batch, self._generate_batch([requests[i] for i in batch], [prompts[i] for i in batch],
                                                        [routes[i] for i in batch], [seeds[i] for i in batch])):
                out[i] = c
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return out  # type: ignore[return-value]

    def _generate_batch(self, requests, prompts, routes, seeds) -> list[Completion]:
        s = requests[0].sampling
        sampler = None if s.greedy else RowSampler(s, seeds, self.device)
        rows = self.generate_rows(prompts, routes, sampler, s.max_new_tokens)
        eos = self.eos_ids(routes[0][0])
        return [self.completion(row, eos) for row in rows]

    @torch.inference_mode()
    def generate_rows(self, prompts: list[list[int]], routes: list, sampler: RowSampler | None,
                      max_new_tokens: int, stopping=None) -> list[list[int]]:
        """The new token ids of each prompt (one batch, left-padded; ``routes``: :meth:`_route` of each row's
        model), greedy or drawn by ``sampler``; ``stopping``: a transformers stopping criterion that may end the
        call early (what follows a row's eos is padding)."""
        model = routes[0][0]
        ids, mask = self._pad_left(prompts)
        kwargs = dict(self.generate_kwargs)
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)  # sampled: by RowSampler
        if sampler is not None:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([*kwargs.get("logits_processor", []), sampler])
        if stopping is not None:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList([*kwargs.get("stopping_criteria", []), stopping])
        names = [name for _, name in routes]
        single = len(set(names)) == 1 and model is self.peft and self.peft is not None
        if any(n is not None for n in names) and not single:
            kwargs["adapter_names"] = [n or BASE for n in names]
        with self._only(names[0]) if single else contextlib.nullcontext(), no_stale_hooks(model):
            gen = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id, **kwargs,
            )
        return gen[:, ids.shape[1]:].tolist()

    def eos_ids(self, model) -> set[int]:
        """The token ids that end a completion of ``model`` (``generate_kwargs`` may set its own)."""
        eos = self.generate_kwargs.get("eos_token_id", model.generation_config.eos_token_id)
        return set(eos if isinstance(eos, (list, tuple)) else [eos]) | {self.tokenizer.eos_token_id}

    def completion(self, row: list[int], eos: set[int]) -> Completion:
        """The completion of the new token ids ``row``: its text up to the first eos (``chat.completion``, as the
        vLLM backend decodes its engine's token ids)."""
        return chat.completion(self.tokenizer, row, eos)

    # -- likelihood ------------------------------------------------------------------------------------------
    def response_ids(self, response: str) -> list[int]:
        return chat.response_ids(self.tokenizer, response)

    @torch.inference_mode()
    def score(self, requests: Sequence[ScoringRequest]) -> list[Score]:
        """Sum of log-probabilities of each response (with its closing eos) given its prompt, per model. A model's
        requests are batched in order of prompt length, so that a batch's responses start near one another: the
        output layer runs only from the first response token of the batch on (:meth:`_score_batch`)."""
        out: list[Score | None] = [None] * len(requests)
        pairs = [(self.prompt_ids(r.messages), self.response_ids(r.response)) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: (str(requests[i].adapter), len(pairs[i][0]), i))
        for adapter, grp in itertools.groupby(order, key=lambda i: requests[i].adapter):
            idx = list(grp)
            model, name = self._route(adapter)
            for j in range(0, len(idx), self.batch_size):
                chunk = idx[j:j + self.batch_size]
                for i, sc in zip(chunk, self._score_batch(model, name, [pairs[i] for i in chunk])):
                    out[i] = sc
        return out  # type: ignore[return-value]

    def _score_batch(self, model, name, pairs) -> list[Score]:
        # the logits that predict a response token start at its prompt's last position: none before the shortest
        # prompt's is computed (a prompt of hundreds of tokens and a vocabulary of 50-150k would otherwise make
        # logits of hundreds of MB that nothing reads)
        start = min(len(p) for p, _ in pairs) - 1
        rows = self._token_logprobs_batch(model, name, [p + r for p, r in pairs], start=start)
        spans = [logp[len(p) - 1 - start: len(p) + len(r) - 1 - start] for (p, r), (logp, _) in zip(pairs, rows)]
        return [Score(logprob=float(span.sum()), num_tokens=len(r), token_logprobs=tuple(span.tolist()))
                for (_, r), span in zip(pairs, spans)]

    @torch.inference_mode()
    def token_logprobs(self, rows: Sequence[Sequence[int]], adapter: str | None = None
                       ) -> list[tuple[list[float | None], list[int | None]]]:
        """For each row of token ids: the log-probability of each token given the ones before it and its rank
        among the model's choices there (1: the most likely), ``None`` for the first token (what a server's
        prompt log-probabilities are)."""
        model, name = self._route(adapter)
        out = []
        for j in range(0, len(rows), self.batch_size):
            for logp, ranks in self._token_logprobs_batch(model, name, [list(r) for r in rows[j:j + self.batch_size]],
                                                          with_ranks=True):
                out.append(([None] + logp.tolist(), [None] + ranks.tolist()))
        return out

    def _token_logprobs_batch(self, model, name, rows: list[list[int]], with_ranks: bool = False, start: int = 0):
        """[(logprob of tokens ``start``\ +1.. given the ones before, their ranks or None)] of each row: one forward
        pass, the output layer run only from position ``start`` on, and the log-softmax one row at a time (its
        memory is one row's positions times the vocabulary, not the batch's)."""
        width = max(len(x) for x in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, x in enumerate(rows):  # right padding: positions start at 0 for every row
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        kwargs = {"adapter_names": [name] * len(rows)} if name is not None else {}
        keep = torch.arange(start, width - 1, device=self.device)  # the positions whose next token is scored
        with no_stale_hooks(model):
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, **kwargs).logits
        targets = ids[:, start + 1:, None]
        out = []
        for i, x in enumerate(rows):
            n = len(x) - 1 - start
            row = torch.log_softmax(logits[i, :n].float(), dim=-1)
            logp = row.gather(-1, targets[i, :n])
            ranks = ((row > logp).sum(-1) + 1).cpu() if with_ranks else None
            out.append((logp[:, 0].cpu(), ranks))
        return out
