"""The society: which model speaks for each agent in each round, and which weights each model has.

With critics (the default), agent n's *generator* (``generator_n``) speaks round 1 and its *critic*
(``critic_n``) every later round: 2N models. Without critics (an ablation) the generator speaks every round.
A shared society (one model for every agent: Majority FT, the single-model ablation) has the one model ``model``.

A mixed society (``society.models``) gives each agent a base model of its own (``bases[n]``, a base's name): agent
n's models are fine-tuned from it, and every request names its model, so that the society's backend
(:class:`mafl.backends.society.SocietyBackend`) sends it to that model's base, an untuned model included.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mafl.errors import ConfigError


TOPOLOGIES = ("full", "ring", "custom")  # who reads whom (see readers)


@dataclass
class Society:
    agents: int
    critics: bool = True
    shared: bool = False
    # model name -> folder of its fine-tuned weights (LoRA adapter or whole model); absent: the base model
    weights: dict[str, str] = field(default_factory=dict)
    bases: list[str] | None = None  # a mixed society: agent n's base model's name (None: one base for all)

    @property
    def mixed(self) -> bool:
        return self.bases is not None

    def speaker(self, agent: int, round: int) -> str:
        if self.shared:
            return "model"
        if self.critics and round > 0:
            return f"critic_{agent}"
        return f"generator_{agent}"

    def is_critic(self, agent: int, round: int) -> bool:
        return round > 0 and (self.critics or self.shared)

    @property
    def models(self) -> list[str]:
        if self.shared:
            return ["model"]
        names = [f"generator_{n}" for n in range(self.agents)]
        return names + ([f"critic_{n}" for n in range(self.agents)] if self.critics else [])

    def base_of(self, model: str) -> str | None:
        """The name of ``model``'s base in a mixed society (None: the one base model)."""
        return self.bases[agent_of(model)] if self.bases is not None else None

    def base(self, agent: int) -> str | None:
        """The backend's name for agent ``agent``'s untuned base model (None: the one base model)."""
        return self.bases[agent] if self.bases is not None else None

    def adapter(self, model: str) -> str | None:
        """The backend's name for ``model``'s weights (None: the untuned base model). In a mixed society always the
        model's name: the society's backend routes it to its base, with its weights when it has any."""
        return model if model in self.weights or self.mixed else None

    def routes(self) -> dict[str, str]:
        """A mixed society's model -> its base's name, for every model."""
        return {m: self.base_of(m) for m in self.models} if self.mixed else {}


def agent_of(model: str) -> int:
    """The agent whose model ``model`` is (``generator_n``, ``critic_n``)."""
    return int(model.rsplit("_", 1)[1])


def readers(agents: int, topology: str, adjacency=None) -> list[list[int]]:
    """``result[n]``: the agents whose answers agent n reads in a later round, in reading order."""
    if topology == "full":
        return [[j for j in range(agents) if j != n] for n in range(agents)]
    if topology == "ring":
        out = []
        for n in range(agents):
            seen = [j % agents for j in (n - 1, n + 1)]
            out.append(sorted({j for j in seen if j != n}))
        return out
    if topology == "custom":
        if adjacency is None or len(adjacency) != agents:
            raise ConfigError(f"debate.adjacency: needs one list per agent ({agents}) for topology=custom")
        out = []
        for n, row in enumerate(adjacency):
            row = [int(j) for j in row]
            bad = [j for j in row if not 0 <= j < agents or j == n]
            if bad:
                raise ConfigError(f"debate.adjacency[{n}]: {bad} are not other agents (0..{agents - 1})")
            out.append(row)
        return out
    raise ConfigError(f"debate.topology: {topology!r} is not one of {', '.join(TOPOLOGIES)}")
