"""The transcript of one debate on one problem, as saved (one JSON object per line) in ``transcripts.jsonl``.

Schema (round and agent indices are 0-based; round 0 is spoken by the generators)::

    {
      "problem": {"id", "question", "answer", "meta"},
      "rounds": [                       # rounds[r][n] is agent n's turn in round r
        [{"agent": 0, "round": 0, "model": "generator_0",
          "messages": [{"role": ..., "content": ...}],   # the whole context it answered in: with
                                         # debate.context=conversation, a later round holds the agent's own
                                         # earlier turns (user/assistant) before the others' answers
          "summary": null | str,         # the summary of the others it read (debate.summarize=true)
          "summary_finished": null | bool,  # false: the summary was cut off by summary_max_new_tokens
          "summary_tokens": int,         # the tokens generated for that summary (0: none was written)
          "response": str, "answer": str | null, "correct": bool, "num_tokens": int,
          "finished": bool},             # false: cut off by max_new_tokens; its answer is then null (it
                                         # never votes and never becomes a training target)
         ...],
        ...
      ],
      "final_answer": str | null,        # majority vote of the last round
      "votes": [[answer, count], ...],   # clusters of equivalent answers, most votes first (the winner first;
                                         # a tie is broken by a seeded choice, see mafl.tasks.vote)
      "correct": bool                    # final_answer against the gold answer (analysis only)
    }
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mafl.tasks.base import Problem


@dataclass
class Turn:
    agent: int
    round: int
    model: str
    messages: list[dict]
    response: str
    answer: str | None
    correct: bool
    num_tokens: int = 0
    summary: str | None = None
    finished: bool = True
    summary_finished: bool | None = None
    summary_tokens: int = 0  # tokens generated for the summary this turn read (its own cost, not the answer's)

    def context(self) -> list[dict]:
        """The conversation after this turn: its messages and its response as the assistant's turn."""
        return [dict(m) for m in self.messages] + [{"role": "assistant", "content": self.response}]


@dataclass
class Transcript:
    problem: Problem
    rounds: list[list[Turn]]
    final_answer: str | None
    votes: list[tuple[str, int]] = field(default_factory=list)
    correct: bool = False

    @property
    def num_agents(self) -> int:
        return len(self.rounds[0]) if self.rounds else 0

    def to_json(self) -> dict:
        return {
            "problem": self.problem.to_json(),
            "rounds": [[asdict(t) for t in rnd] for rnd in self.rounds],
            "final_answer": self.final_answer,
            "votes": [list(v) for v in self.votes],
            "correct": self.correct,
        }

    @classmethod
    def from_json(cls, d: dict) -> "Transcript":
        return cls(
            problem=Problem.from_json(d["problem"]),
            rounds=[[Turn(**t) for t in rnd] for rnd in d["rounds"]],
            final_answer=d.get("final_answer"),
            votes=[(a, int(c)) for a, c in d.get("votes", [])],
            correct=bool(d.get("correct", False)),
        )
