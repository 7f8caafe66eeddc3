"""Generation backends, registered by name and imported lazily, so that a module of an optional library (vLLM) is
imported only when chosen; ``backend.*`` holds the chosen backend class's own constructor arguments (checked
before any work)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping

from mafl.backends.base import (COMMON_SETTINGS, Backend, Capabilities, Completion, GenerationRequest, Sampling,
                                Score, ScoringRequest, ScoringUnavailable)
from mafl.errors import known_keys, plain
from mafl.registry import Registry

BACKENDS: Registry[str] = Registry("backend", "backend.name")
BACKENDS.register("hf", "mafl.backends.hf:HFBackend")
BACKENDS.register("vllm", "mafl.backends.vllm:VLLMBackend")
BACKENDS.register("openai", "mafl.backends.openai_api:OpenAIBackend")

# constructor arguments that come from other sections of the config (model.*, device), not from backend.*
FROM_RUN = ("model_path", *COMMON_SETTINGS)


def backend_class(name: str):
    return BACKENDS.load(name)


@dataclass(frozen=True)
class BackendSettings:
    name: str
    options: dict[str, Any] = field(default_factory=dict)  # backend.* without name: constructor arguments

    @classmethod
    def from_cfg(cls, c: Mapping) -> "BackendSettings":
        """A ConfigError naming ``backend.name`` when it is not registered, or a key the class does not take, or
        a value its ``check_options(options)`` (where the class has one) refuses."""
        options = dict(plain(c))
        name = options.pop("name", None)
        backend = backend_class(name)
        check = getattr(backend, "check_options", None)
        if check is not None:
            check(options)
        params = inspect.signature(backend).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            known_keys(options, "backend", ["name", *(p for p in params if p not in FROM_RUN)])
        return cls(name=name, options=options)


__all__ = ["COMMON_SETTINGS", "Backend", "BackendSettings", "Capabilities", "Completion", "GenerationRequest",
           "Sampling", "Score", "ScoringRequest", "ScoringUnavailable", "BACKENDS", "backend_class"]
