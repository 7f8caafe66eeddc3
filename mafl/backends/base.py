"""The generation backend interface: a list of requests in, a list of completions out.

Every request names the model that speaks it (an adapter name of the society, or ``None`` for the base model),
its chat messages and its sampling settings. A backend is free to batch requests across adapters and problems;
the order of the returned completions is the order of the requests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one request. ``temperature=0`` means greedy decoding."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[dict, ...] | list[dict]
    adapter: str | None = None
    sampling: Sampling = field(default_factory=Sampling)


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int
    finished: bool = True  # False when cut by max_new_tokens


@dataclass(frozen=True)
class ScoringRequest:
    """Log-likelihood of ``response`` as the assistant's answer to ``messages`` under ``adapter``."""

    messages: tuple[dict, ...] | list[dict]
    response: str
    adapter: str | None = None


@dataclass(frozen=True)
class Score:
    logprob: float  # sum of the response tokens' log-probabilities
    num_tokens: int


class Backend(Protocol):
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]: ...

    def score(self, requests: Sequence[ScoringRequest]) -> list[Score]: ...

    def load_adapter(self, name: str, path: str) -> None:
        """Load (or replace) the LoRA adapter ``name`` from the folder ``path``."""

    def adapters(self) -> list[str]: ...

    def close(self) -> None: ...
