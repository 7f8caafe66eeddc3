"""Any JSONL file of question/answer rows; ``answer_type`` chooses how answers are read and compared.

    integer  one whole number (the gold answer must be one)   - as GSM8K: exact value, ``1,234 == 1234``
    number   one number (``18.00 == 18``, ``0.5 == 1/2``)      - as GSM8K
    math     a LaTeX expression                                - as MATH: math-verify in the sandbox
    text     free text: the last ``\\boxed{}``, else the text after "The answer is"; compared case-,
             space- and punctuation-insensitively after unwrapping ``\\text{}``
"""
from __future__ import annotations

import re

from mafl.tasks.answers import MAX_ANSWER_CHARS, last_boxed, stated_answer
from mafl.errors import choice
from mafl.tasks.base import BadRow, Task
from mafl.tasks.loading import FileTask
from mafl.tasks.math_task import MathTask
from mafl.tasks.numeric import NumericTask

ANSWER_TYPES = ("integer", "number", "math", "text")

_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_EDGE = re.compile(r"^[\s\"'`*.,;:!?()\[\]$]+|[\s\"'`*.,;:!?()\[\]$]+$")


def normalize_text(s: str) -> str:
    """Lower case, ``\\text{}`` unwrapped, spaces collapsed, quotes/punctuation/brackets at the ends removed."""
    s = _TEXT.sub(r"\1", s)
    s = _EDGE.sub("", " ".join(s.split()))
    return s.lower()


class TextTask(FileTask):
    name = "text"

    def __init__(self, question_field: str = "question", answer_field: str = "answer"):
        self.question_field, self.answer_field = question_field, answer_field

    def extract_answer(self, response: str) -> str | None:
        if not isinstance(response, str):
            return None
        answer = last_boxed(response)
        if answer is None:
            answer = stated_answer(response)
        if answer is None:
            return None
        answer = answer.strip()
        return answer if normalize_text(answer) and len(answer) <= MAX_ANSWER_CHARS else None

    def is_equivalent(self, pred: str | None, gold: str) -> bool:
        if not isinstance(pred, str) or not isinstance(gold, str) or len(pred) > MAX_ANSWER_CHARS:
            return False
        a = normalize_text(pred)
        return bool(a) and a == normalize_text(gold)

    def gold_answer(self, row: dict) -> str:
        raw = row.get(self.answer_field)
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            raw = str(raw)
        if not isinstance(raw, str) or not normalize_text(raw):
            raise BadRow(self.answer_field, "missing" if raw is None else "empty or not text")
        return raw.strip()


def jsonl_task(answer_type: str = "number", question_field: str = "question", answer_field: str = "answer",
               check_timeout: float = 5.0, check_workers: int | None = None) -> Task:
    """The task for a JSONL file whose rows hold ``question_field`` and ``answer_field``."""
    choice({"answer_type": answer_type}, "answer_type", "dataset", ANSWER_TYPES)
    if answer_type in ("integer", "number"):
        task: Task = NumericTask(question_field, answer_field, integer=answer_type == "integer")
    elif answer_type == "math":
        task = MathTask(question_field=question_field, answer_field=answer_field, solution_field=answer_field,
                        check_timeout=check_timeout, check_workers=check_workers)
    else:
        task = TextTask(question_field, answer_field)
    task.name = "jsonl"
    return task
