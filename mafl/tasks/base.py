"""What every task offers: problems, answer extraction and equivalence grading.

One API is used everywhere (debate votes, fine-tuning sets, metrics)::

    from mafl.tasks import get_task
    task = get_task("gsm8k")
    pred = task.extract_answer(response)      # str | None (None: no answer could be read)
    ok = task.is_equivalent(pred, gold)       # never raises, bounded in time; None is never equivalent
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: str  # the gold final answer, as the task's extract/equivalence functions understand it
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. reference solution, level, subject

    def to_json(self) -> dict:
        return {"id": self.id, "question": self.question, "answer": self.answer, "meta": dict(self.meta)}

    @classmethod
    def from_json(cls, d: dict) -> "Problem":
        return cls(id=d["id"], question=d["question"], answer=d["answer"], meta=d.get("meta") or {})


class Task(ABC):
    name: str

    @abstractmethod
    def extract_answer(self, response: str) -> str | None:
        """The final answer stated in a model response, normalised; None when none can be read."""

    @abstractmethod
    def is_equivalent(self, pred: str | None, gold: str) -> bool:
        """True when ``pred`` means the same answer as ``gold``. Never raises; bounded in time."""

    @abstractmethod
    def gold_answer(self, row: dict) -> str:
        """The gold final answer of one raw dataset row."""
