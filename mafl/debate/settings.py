"""The debate's settings (``conf/debate/*.yaml``), checked before any work starts."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

from mafl.debate.society import TOPOLOGIES, readers
from mafl.errors import ConfigError, choice, integer, known_keys, number

# how a later round is prompted (mafl.tasks.prompts): the agent's own conversation plus the others' answers, a fresh
# prompt with the others' answers only, or the agent's own conversation and a request to review it (self-refinement)
CONTEXTS = ("conversation", "others", "self")


@dataclass(frozen=True)
class DebateSettings:
    agents: int
    rounds: int
    max_others: int | None
    summarize: bool
    summarizer: str
    context: str
    topology: str
    adjacency: list | None
    critics: bool
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    summary_max_new_tokens: int
    chunk_size: int | None  # None: auto (the backend's, mafl.debate.engine.chunk_size_of)

    @classmethod
    def from_cfg(cls, c: Mapping) -> "DebateSettings":
        p = "debate"
        known_keys(c, p, [f.name for f in fields(cls)])
        s = cls(
            agents=integer(c, "agents", p, low=1),
            rounds=integer(c, "rounds", p, low=1),
            max_others=integer(c, "max_others", p, low=1, none_ok=True),
            summarize=bool(c.get("summarize", False)),
            summarizer=choice(c, "summarizer", p, ("base", "self")),
            context=choice(c, "context", p, CONTEXTS),
            topology=choice(c, "topology", p, TOPOLOGIES),
            adjacency=list(c["adjacency"]) if c.get("adjacency") is not None else None,
            critics=bool(c.get("critics", True)),
            temperature=number(c, "temperature", p, low=0.0),
            top_p=number(c, "top_p", p, low=0.0, high=1.0, strict_low=True),
            top_k=integer(c, "top_k", p, low=0),
            max_new_tokens=integer(c, "max_new_tokens", p, low=1),
            summary_max_new_tokens=integer(c, "summary_max_new_tokens", p, low=1),
            chunk_size=None if c.get("chunk_size") == "auto" else integer(c, "chunk_size", p, low=1),
        )
        readers(s.agents, s.topology, s.adjacency)  # checks a custom adjacency
        if s.context == "self" and s.summarize and s.rounds > 1:
            raise ConfigError("debate.summarize: debate.context=self (self-refinement) shows no other agent's "
                              "answer, so there is nothing to summarise; set debate.summarize=false")
        return s
