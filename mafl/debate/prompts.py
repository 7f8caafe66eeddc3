"""The messages each agent is given, built from the task's prompt templates in ``conf/dataset/<task>.yaml``.

Templates use ``str.format`` fields: ``round1`` {question}; ``debate`` {question} {others}; ``other`` {agent}
(1-based) {response}; ``summarize`` {others}; ``summary`` {summary}. Only the problem's question is ever put in
a prompt, never its gold answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from mafl.errors import ConfigError

FIELDS = {
    "system_generator": (),
    "system_critic": (),
    "round1": ("question",),
    "debate": ("question", "others"),
    "other": ("agent", "response"),
    "summarize": ("others",),
    "summary": ("summary",),
}


@dataclass(frozen=True)
class Prompts:
    system_generator: str
    system_critic: str
    round1: str
    debate: str
    other: str
    summarize: str
    summary: str

    @classmethod
    def from_cfg(cls, cfg: Mapping, key: str = "dataset.prompts") -> "Prompts":
        import string

        values = {}
        for name, fields in FIELDS.items():
            if name not in cfg or not isinstance(cfg[name], str):
                raise ConfigError(f"{key}.{name}: missing (a string template with fields {list(fields)})")
            text = cfg[name]
            try:
                used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            except ValueError as e:
                raise ConfigError(f"{key}.{name}: not a valid template ({e}); write literal braces as {{{{ }}}}")
            unknown = used - set(fields)
            if unknown:
                raise ConfigError(f"{key}.{name}: unknown field(s) {sorted(unknown)}; allowed: {list(fields)}")
            values[name] = text
        return cls(**values)

    def system(self, critic: bool) -> str:
        return self.system_critic if critic else self.system_generator

    def first_round(self, question: str) -> list[dict]:
        return [
            {"role": "system", "content": self.system_generator},
            {"role": "user", "content": self.round1.format(question=question)},
        ]

    def others_block(self, others: Sequence[tuple[int, str]]) -> str:
        """``others``: (0-based agent index, its latest response) of each agent read."""
        return "\n".join(self.other.format(agent=j + 1, response=r) for j, r in others)

    def summarize_request(self, others: Sequence[tuple[int, str]], critic: bool) -> list[dict]:
        return [
            {"role": "system", "content": self.system(critic)},
            {"role": "user", "content": self.summarize.format(others=self.others_block(others))},
        ]

    def later_round(self, question: str, others: Sequence[tuple[int, str]], critic: bool,
                    summary: str | None = None) -> list[dict]:
        block = self.summary.format(summary=summary) if summary is not None else self.others_block(others)
        return [
            {"role": "system", "content": self.system(critic)},
            {"role": "user", "content": self.debate.format(question=question, others=block)},
        ]
