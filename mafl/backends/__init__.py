"""Generation backends, looked up lazily by name so that a GPU-only module is imported only when chosen."""
from __future__ import annotations

import importlib

from mafl.backends.base import Backend, Completion, GenerationRequest, Sampling, Score, ScoringRequest

BACKENDS = {
    "hf": "mafl.backends.hf:HFBackend",
    "vllm": "mafl.backends.vllm:VLLMBackend",
}


def backend_class(name: str):
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"backend.name: unknown backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["Backend", "Completion", "GenerationRequest", "Sampling", "Score", "ScoringRequest", "BACKENDS", "backend_class"]
