"""The messages each agent is given, built from the task's prompt templates in ``conf/dataset/<task>.yaml`` (they
belong to the dataset, ``dataset.prompts``; the debate engine, mafl/debate/, builds its turns with them).

Templates use ``str.format`` fields: ``round1`` {question}; ``debate`` and ``debate_others`` {question} {others};
``other`` {agent} (1-based) {response}; ``summarize`` {others}; ``summary`` {summary}; and beside them
``dataset.review_prompt`` (``review``) {question}.
Only the problem's question is ever put in a prompt, never its gold answer. An empty system template means no
system message.

Later rounds (``debate.context``):

* ``conversation`` (the default, as in the paper's code): the agent continues its own conversation. Its earlier
  turns stay as user/assistant messages, and the other agents' answers (or their summary) arrive as the next user
  turn, rendered with ``debate``. The system message is the speaking model's (the critic's from round 2 on).
* ``others`` (mafl's earlier form, for comparison): a fresh [system, user] pair; the user turn, ``debate_others``,
  holds the question and the other agents' answers only; the agent does not see its own earlier answer.
* ``self`` (isolated self-refinement, ``method=self_refine``): the agent continues its own conversation, and the
  next user turn, rendered with ``review`` (``dataset.review_prompt``), asks it to review its own answer; no other agent's answer (or summary)
  is shown. The system message is the generator's: the agent checks itself, not others.

A summary request (``summarize``) is a single user turn, as in the paper's code.
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
    "debate_others": ("question", "others"),
    "other": ("agent", "response"),
    "summarize": ("others",),
    "summary": ("summary",),
    "review": ("question",),
}


def checked_template(key: str, text: str, fields: Sequence[str]) -> str:
    """``text`` when it is a ``str.format`` template using only ``fields``; else a ConfigError naming ``key``."""
    import string

    try:
        used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as e:
        raise ConfigError(f"{key}: not a valid template ({e}); write literal braces as {{{{ }}}}")
    unknown = used - set(fields)
    if unknown:
        raise ConfigError(f"{key}: unknown field(s) {sorted(unknown)}; allowed: {list(fields)}")
    return text


@dataclass(frozen=True)
class Prompts:
    system_generator: str
    system_critic: str
    round1: str
    debate: str
    debate_others: str
    other: str
    summarize: str
    summary: str
    review: str = ""  # self-refinement's (dataset.review_prompt); "" when the dataset has none

    @classmethod
    def from_cfg(cls, cfg: Mapping, key: str = "dataset.prompts", review: str | None = None,
                 review_key: str = "dataset.review_prompt") -> "Prompts":
        """The templates of ``cfg``; ``review`` (``dataset.review_prompt``, None: none) is self-refinement's, kept
        beside the others since the embedded model's corpus and cache key are built from ``dataset.prompts``."""
        values = {}
        for name, fields in FIELDS.items():
            if name == "review":
                continue
            if name not in cfg or not isinstance(cfg[name], str):
                raise ConfigError(f"{key}.{name}: missing (a string template with fields {list(fields)})")
            values[name] = checked_template(f"{key}.{name}", cfg[name], fields)
        if review is not None and not isinstance(review, str):
            raise ConfigError(f"{review_key}: must be a string template with fields {list(FIELDS['review'])}")
        return cls(**values, review=checked_template(review_key, review, FIELDS["review"]) if review else "")

    def system(self, critic: bool) -> list[dict]:
        """The system message of a generator or a critic (none for an empty template)."""
        text = self.system_critic if critic else self.system_generator
        return [{"role": "system", "content": text}] if text else []

    def first_round(self, question: str) -> list[dict]:
        return self.system(False) + [{"role": "user", "content": self.round1.format(question=question)}]

    def others_block(self, others: Sequence[tuple[int, str]]) -> str:
        """``others``: (0-based agent index, its latest response) of each agent read."""
        return "\n".join(self.other.format(agent=j + 1, response=r) for j, r in others)

    def summarize_request(self, others: Sequence[tuple[int, str]]) -> list[dict]:
        return [{"role": "user", "content": self.summarize.format(others=self.others_block(others))}]

    def later_round(self, question: str, others: Sequence[tuple[int, str]], critic: bool,
                    summary: str | None = None, history: Sequence[dict] | None = None) -> list[dict]:
        """The messages of a later-round turn. ``history``: the agent's conversation so far (its previous turn's
        messages and response, :meth:`Turn.context`) for ``debate.context=conversation``; None for ``others``."""
        block = self.summary.format(summary=summary) if summary is not None else self.others_block(others)
        if history is None:
            return self.system(critic) + [
                {"role": "user", "content": self.debate_others.format(question=question, others=block)}]
        earlier = [dict(m) for m in history if m["role"] != "system"]
        return self.system(critic) + earlier + [
            {"role": "user", "content": self.debate.format(question=question, others=block)}]

    def review_round(self, question: str, history: Sequence[dict]) -> list[dict]:
        """A later-round turn of self-refinement (``debate.context=self``): the agent's own conversation so far
        (:meth:`Turn.context`), then ``review``; nothing from any other agent."""
        if not self.review:
            raise ConfigError("dataset.review_prompt: missing (self-refinement's template, with field question)")
        earlier = [dict(m) for m in history if m["role"] != "system"]
        return self.system(False) + earlier + [{"role": "user", "content": self.review.format(question=question)}]
