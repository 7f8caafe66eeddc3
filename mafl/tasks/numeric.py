"""Tasks whose answer is one number: Arithmetic, GSM8K, and JSONL files with ``answer_type`` integer or number.

Extraction (``answers.numeric_answer``): the last ``\\boxed{}``, else the stated final answer ("The answer is
..."), else the number after ``####``, else the last number; canonical text out (``1234``, ``-27``, ``18.5``).
Equivalence is exact on values: ``18.00 == 18``, ``1,234 == 1234``, ``1.234 != 1234``, ``0.5 == 1/2``. Both
sides must read as exactly one number (``parse_number``); anything else is not equivalent. All in-process:
inputs are bounded and nothing symbolic happens.
"""
from __future__ import annotations

from fractions import Fraction

from mafl.tasks.answers import format_number, numeric_answer, parse_number
from mafl.tasks.base import REFERENCE, BadRow, Reference
from mafl.tasks.loading import FileTask


class NumericTask(FileTask):
    """One number per answer. ``integer=True`` also requires every gold answer to be a whole number."""

    name = "number"

    def __init__(self, question_field: str = "question", answer_field: str = "answer", integer: bool = False):
        self.question_field, self.answer_field, self.integer = question_field, answer_field, integer

    def extract_answer(self, response: str) -> str | None:
        if not isinstance(response, str):
            return None
        return numeric_answer(response)

    def is_equivalent(self, pred: str | None, gold: str) -> bool:
        if not isinstance(pred, str) or not isinstance(gold, str):
            return False
        a, b = parse_number(pred), parse_number(gold)
        return a is not None and b is not None and a == b

    def gold_answer(self, row: dict) -> str:
        return self._gold_value(row.get(self.answer_field), self.answer_field)

    def _gold_value(self, raw: object, field: str) -> str:
        if raw is None:
            raise BadRow(field, "missing")
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise BadRow(field, f"not a number: {raw!r:.80}")
        try:
            value = Fraction(str(raw)) if isinstance(raw, (int, float)) else parse_number(raw)
        except (ValueError, OverflowError):  # nan, inf
            value = None
        if value is None:
            raise BadRow(field, "empty" if not str(raw).strip() else f"not a number: {raw!r:.80}")
        if self.integer and value.denominator != 1:
            raise BadRow(field, f"not an integer: {raw!r:.80}")
        return format_number(value)


class GSM8KTask(NumericTask):
    """GSM8K: the gold answer is the number after the last ``####`` of the worked solution (``#### 2,125``)."""

    name = "gsm8k"

    def __init__(self) -> None:
        super().__init__(question_field="question", answer_field="answer")

    def gold_answer(self, row: dict) -> str:
        solution = row.get("answer")
        if not isinstance(solution, str) or not solution.strip():
            raise BadRow("answer", "missing" if solution is None else "empty or not text")
        if "####" not in solution:
            raise BadRow("answer", "no '#### <answer>' line")
        return self._gold_value(solution.rsplit("####", 1)[1].strip(), "answer")

    def row_meta(self, row: dict) -> dict:
        return {"solution": row.get("answer")}

    def reference_response(self, problem) -> Reference:
        """The gold worked solution, its calculator annotations (``<<48/2=24>>``) removed and its ``#### N`` line
        stated as ``The answer is N.``: ``result`` is where the solution last reaches N before that."""
        import re

        solution = problem.meta.get("solution")
        if not isinstance(solution, str) or "####" not in solution:
            return super().reference_response(problem)
        reasoning = re.sub(r"<<[^<>]*>>", "", solution.rsplit("####", 1)[0]).strip()
        return Reference.locate(f"{reasoning}\n{REFERENCE.format(answer=problem.answer)}", problem.answer)
