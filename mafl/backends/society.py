"""The backend of a mixed society (``society.models``): one backend of the run's class per base model, each request
sent to the base of the model it names.

Agent n's models (``generator_n``, ``critic_n``) live on agent n's base: a model with fine-tuned weights is served
as that base's adapter (or whole model), an untuned one by the base itself, so every request names its model
(:meth:`mafl.debate.society.Society.adapter`) and never ``None``. A base's own name reaches the untuned base (the
summaries of ``debate.summarizer=base``: the reading agent's base; ``kl/base``: the speaking agent's base, see
:meth:`base_of`). Messages are tokenized by each base's backend with its own tokenizer.

The :mod:`backend contract <mafl.backends.base>` holds, with two differences: ``adapters()`` lists every model of
the society (each is served, by its weights or by its base), and ``load_adapter`` refuses weights fine-tuned from
another base than their agent's (:func:`mafl.models.check_weights_base`). ``capabilities`` are the inner class's;
``tokenizer`` is agent 0's base's. There is no ``lend_base``: the session frees the bases before the fine-tunes,
which load their own agent's base.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Sequence

from mafl.backends.base import Completion, GenerationRequest, Score, ScoringRequest
from mafl.models import check_weights_base


class SocietyBackend:
    def __init__(self, backends: Mapping[str, Any], routes: Mapping[str, str], paths: Mapping[str, str]):
        """``backends``: base name -> its backend; ``routes``: model name -> its base's name; ``paths``: base name ->
        the base's path (what fine-tuned weights must have been made from)."""
        missing = sorted({b for b in routes.values() if b not in backends} | {b for b in backends if b not in paths})
        if missing:
            raise ValueError(f"no backend or path for the base(s) {', '.join(missing)}")
        clash = sorted(set(routes) & set(backends))
        if clash:
            raise ValueError(f"{clash[0]!r} names both a model and a base")
        self.backends = dict(backends)
        self.routes = dict(routes)
        self.paths = dict(paths)
        first = next(iter(self.backends.values()))
        self.capabilities = type(first).capabilities
        self.tokenizer = getattr(first, "tokenizer", None)
        self._loaded: dict[str, set[str]] = {b: set() for b in self.backends}  # base -> models with weights on it

    @classmethod
    def build(cls, backend_class, bases: Mapping[str, tuple[str, Any]], routes: Mapping[str, str], *, device: str,
              progress: bool, **options) -> "SocietyBackend":
        """One ``backend_class`` per base: ``bases`` maps a base's name to (its path, its
        :class:`~mafl.models.ModelSettings`), whose dtype, chat template and trust_remote_code it is loaded with."""
        backends = {}
        try:
            for name, (path, model) in bases.items():
                backends[name] = backend_class(
                    path, dtype=model.dtype, device=device, chat_template=model.chat_template,
                    trust_remote_code=model.trust_remote_code, progress=progress, **options)
        except BaseException:
            for b in backends.values():
                b.close()
            raise
        return cls(backends, routes, {name: path for name, (path, _) in bases.items()})

    # -- routing ---------------------------------------------------------------------------------------------------
    def base_of(self, name: str) -> str:
        """The name that reaches the untuned base of model ``name`` (a base's name is its own base)."""
        if name in self.backends:
            return name
        if name not in self.routes:
            raise KeyError(f"{name!r} is no model of the mixed society (models: {', '.join(sorted(self.routes))}; "
                           f"bases: {', '.join(self.backends)})")
        return self.routes[name]

    def _route(self, name: str | None) -> tuple[str, str | None]:
        """(base, the inner backend's adapter name or None for the base itself)."""
        if name is None:
            raise KeyError("a mixed society has no one base model: a request names its model or a base "
                           f"({', '.join(self.backends)})")
        base = self.base_of(name)
        return base, (name if name in self._loaded[base] else None)

    def _dispatch(self, requests: Sequence, call: str) -> list:
        routes = [self._route(r.adapter) for r in requests]  # an unknown name fails before any work
        groups: dict[str, list[int]] = {}
        for i, (base, _) in enumerate(routes):
            groups.setdefault(base, []).append(i)
        out: list = [None] * len(requests)
        for base, idx in groups.items():
            inner = [replace(requests[i], adapter=routes[i][1]) for i in idx]
            for i, result in zip(idx, getattr(self.backends[base], call)(inner)):
                out[i] = result
        return out

    # -- the contract ----------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        return self._dispatch(requests, "generate")

    def score(self, requests: Sequence[ScoringRequest]) -> list[Score]:
        return self._dispatch(requests, "score")

    def load_adapter(self, name: str, path: str) -> None:
        """Serve ``name``'s weights on its agent's base; refused when they were fine-tuned from another base."""
        if name not in self.routes:
            raise KeyError(f"{name!r} is no model of the mixed society (models: {', '.join(sorted(self.routes))})")
        base = self.routes[name]
        check_weights_base(path, self.paths[base], name)
        self.backends[base].load_adapter(name, path)
        self._loaded[base].add(name)

    def unload(self, name: str) -> None:
        base = self.routes.get(name)
        if base is not None and name in self._loaded[base]:
            self.backends[base].unload(name)
            self._loaded[base].discard(name)

    def adapters(self) -> list[str]:
        """Every model of the society: each is served, by its weights or by its agent's base."""
        return sorted(self.routes)

    def weights(self) -> dict[str, list[str]]:
        """Base -> the models served with fine-tuned weights on it."""
        return {b: sorted(m) for b, m in self._loaded.items()}

    def close(self) -> None:
        for b in self.backends.values():
            b.close()
        self._loaded = {b: set() for b in self.backends}
