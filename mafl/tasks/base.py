"""What every task offers: problems, answer extraction and equivalence grading.

One API is used everywhere (debate votes, fine-tuning sets, metrics)::

    from mafl.tasks import get_task
    task = get_task("gsm8k")
    pred = task.extract_answer(response)      # str | None (None: no answer could be read)
    ok = task.is_equivalent(pred, gold)       # never raises, bounded in time; None is never equivalent
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mafl.errors import choice, integer


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


@dataclass(frozen=True)
class Reference:
    """A worked response that reaches a problem's gold answer, for analysis only (``mafl diagnose``, never shown to
    an agent). ``answer``: the (start, end) characters of ``text`` where it states the gold answer at its end (the
    last occurrence); ``result``: where its reasoning reaches the answer before that (the occurrence before the
    last), None when the answer is stated only once (no worked reasoning)."""

    text: str
    answer: tuple[int, int]
    result: tuple[int, int] | None = None

    @classmethod
    def locate(cls, text: str, gold: str) -> "Reference":
        """The reference ``text``, its spans found by where ``gold`` occurs in it (as a whole number where it is
        one: ``7`` is not found inside ``17`` or ``7.5``); a ValueError when it does not occur."""
        import re

        pattern = re.escape(gold)
        if re.fullmatch(r"-?\d+(?:\.\d+)?", gold):
            pattern = r"(?<![\d.\-])" + pattern + r"(?!\d|\.\d)"
        spans = [m.span() for m in re.finditer(pattern, text)]
        if not spans:
            raise ValueError(f"the reference response does not state the gold answer {gold!r}")
        return cls(text=text, answer=spans[-1], result=spans[-2] if len(spans) > 1 else None)


REFERENCE = "The answer is {answer}."  # the generic reference response: the gold answer, stated as agents state it


class BadRow(ValueError):
    """A raw dataset row that cannot become a Problem; ``field`` names the offending field."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"field {field!r}: {reason}")
        self.field = field


# the dataset keys every task takes (conf/dataset/*.yaml); a task reads its own besides (Task.config_keys and
# the arguments of its constructor), and any other key is refused
# dataset.split: which held-out problems a run is measured on: eval (the reported problems) | dev (another seed
# stream, disjoint from eval and train: the problems settings are chosen on)
SPLITS = ("eval", "dev")
DATASET_KEYS = ("name", "task", "n_train", "n_eval", "eval_seed", "train_seed", "protocol", "split", "prompts",
                "review_prompt")


class Task(ABC):
    name: str
    question_field: str = "question"
    config_keys: tuple[str, ...] = ()  # the dataset keys this task reads besides DATASET_KEYS and its arguments

    @abstractmethod
    def extract_answer(self, response: str) -> str | None:
        """The final answer stated in a model response, normalised; None when none can be read."""

    @abstractmethod
    def is_equivalent(self, pred: str | None, gold: str) -> bool:
        """True when ``pred`` means the same answer as ``gold``. Never raises; bounded in time."""

    @abstractmethod
    def gold_answer(self, row: dict) -> str:
        """The gold final answer of one raw dataset row."""

    def equivalent_many(self, pairs: Iterable[tuple[str | None, str]]) -> list[bool]:
        """``is_equivalent(pred, gold)`` for every (pred, gold) pair, in order (tasks may run them in parallel)."""
        return [self.is_equivalent(pred, gold) for pred, gold in pairs]

    def check_config(self, cfg: Mapping) -> None:
        """Refuse a ``dataset.*`` value that cannot work, with a ConfigError naming the key (before any work)."""
        integer(cfg, "n_train", "dataset", low=1, none_ok=True)
        integer(cfg, "n_eval", "dataset", low=1, none_ok=True)
        integer(cfg, "eval_seed", "dataset", low=0)
        integer(cfg, "train_seed", "dataset", low=0)
        choice(cfg, "protocol", "dataset", ("heldout", "official"))
        choice(cfg, "split", "dataset", SPLITS)

    def load_problems(self, cfg: Mapping) -> tuple[list["Problem"], list["Problem"]]:
        """The (train, eval) problems of a dataset config group (``conf/dataset/<name>.yaml``): disjoint, the eval
        problems drawn with ``eval_seed`` and the train problems with ``train_seed``, whatever the run's seed.
        ``split: dev`` returns a dev split in place of the eval problems: as many problems, drawn from a seed stream
        of their own and disjoint from both the eval and the train problems (for choosing settings)
        (``dataset.protocol`` is applied on top, by :func:`mafl.tasks.load_splits`)."""
        raise NotImplementedError(f"the {self.name} task does not load problems from a dataset config")

    def reference_response(self, problem: Problem) -> Reference:
        """A response reaching ``problem``'s gold answer, for analysis only (never shown to an agent): by default
        ``The answer is <gold>.`` (:data:`REFERENCE`); a task with worked solutions gives one with its reasoning."""
        return Reference.locate(REFERENCE.format(answer=problem.answer), problem.answer)

    def row_meta(self, row: dict) -> dict[str, Any]:
        """What a Problem keeps of a raw row besides question and answer (reference solution, level, ...)."""
        return {}

    def problem(self, row: dict, id: str) -> Problem:
        """The Problem of one raw row; raises BadRow naming the field that is missing or empty."""
        question = row.get(self.question_field)
        if not isinstance(question, str) or not question.strip():
            raise BadRow(self.question_field, "missing" if question is None else "empty or not text")
        answer = self.gold_answer(row)
        if not answer:
            raise BadRow(getattr(self, "answer_field", "answer"), "no gold answer")
        return Problem(id=id, question=question, answer=answer, meta=self.row_meta(row))
