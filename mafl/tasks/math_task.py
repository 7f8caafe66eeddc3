"""MATH (Hendrycks et al.) and MATH500: LaTeX answers graded by math-verify in a time-bounded sandbox.

Gold: a row's ``answer`` field when it has one (MATH500), else the last ``\\boxed{}``/``\\fbox{}`` of its
``solution`` (brace matching; ``\\boxed 5`` too). Prediction: the last ``\\boxed{}`` of the response, else the
text after the last "The final answer is", else None.

Equivalence, cheapest first:
1. both answers the same after removing presentation (``$``, spaces, ``\\left``/``\\right``, ``\\dfrac``->
   ``\\frac``, ``\\text{}``, ``^\\circ``, ``\\%``, ``\\$``): equivalent;
2. both plain numbers (``-12``, ``0.50``, ``1,234``, ``\\frac{3}{4}``): equivalent when the values are exactly
   equal (a decimal against a non-integer fraction is left to step 3);
3. otherwise math-verify (``parse`` on ``\\boxed{...}`` of each side, then ``verify(gold, pred)``) in a worker
   process with a hard wall-clock limit (``check_timeout``): fractions, intervals, sets, tuples, roots,
   ``x=3`` vs ``3``, text answers. No answer in time = not equivalent.
Inputs longer than ``MAX_ANSWER_CHARS`` are not equivalent.
"""
from __future__ import annotations

import importlib.util
import logging
import re
from fractions import Fraction
from typing import Callable, Iterable, Mapping

from mafl.tasks.answers import MAX_ANSWER_CHARS, last_boxed, parse_number, stated_answer
from mafl.tasks.base import BadRow
from mafl.tasks.loading import FileTask
from mafl.tasks.sandbox import get_sandbox

log = logging.getLogger(__name__)

_FINAL = re.compile(r"final\s+answer\s+is\s*:?\s*", re.I)
_PLAIN_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_PLAIN_FRACTION = re.compile(r"-?\\frac\{-?\d{1,50}\}\{-?\d{1,50}\}|-?\d{1,50}/\d{1,50}")
_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\left\b|\\right\b|\\[!,;: ]|\s+")


def _strip_math_delimiters(s: str) -> str:
    s = s.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            return s[len(left) : len(s) - len(right)].strip()
    return s


def presentation_free(s: str) -> str:
    """Light normalisation that keeps the meaning (sent to math-verify): no ``$`` wrapper, ``\\dfrac`` ->
    ``\\frac``, no ``\\%``, ``\\$``, ``^\\circ``, ``\\!``, no trailing period."""
    s = _strip_math_delimiters(s.strip().rstrip(".").strip())
    for old, new in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("^{\\circ}", ""), ("^\\circ", ""),
                     ("\\%", ""), ("%", ""), ("\\$", ""), ("\\!", ""), ("{,}", ",")):
        s = s.replace(old, new)
    return s.strip().rstrip(".").strip()


def canonical_text(s: str) -> str:
    """``presentation_free`` and also no ``\\text{}`` wrappers, ``\\left``/``\\right`` or spacing: for equality."""
    s = _TEXT.sub(r"\1", presentation_free(s))
    return _SPACING.sub("", s)


def plain_number(s: str) -> tuple[Fraction, bool] | None:
    """(value, is_decimal) of an answer that is just an integer, a decimal or a fraction of integers
    (``-12``, ``0.50``, ``1,234``, ``\\frac{3}{4}``, ``-\\dfrac{1}{2}``, ``3/4``), else None."""
    s = presentation_free(s)
    if _PLAIN_NUMBER.fullmatch(s):
        value = parse_number(s)
        return None if value is None else (value, "." in s)
    if _PLAIN_FRACTION.fullmatch(s):
        value = parse_number(s)
        return None if value is None else (value, False)
    return None


def quick_verdict(pred: str, gold: str) -> bool | None:
    """True/False when the cheap checks decide, None when math-verify must.

    Numbers are compared exactly, except a decimal against a fraction (``0.333333`` vs ``\\frac13``): that
    is left to math-verify and its rounding, like every other answer.
    """
    if canonical_text(pred) == canonical_text(gold):
        return True
    a, b = plain_number(pred), plain_number(gold)
    if a is None or b is None:
        return None
    (x, x_decimal), (y, y_decimal) = a, b
    if x == y:
        return True
    if (x_decimal and y.denominator != 1 and not y_decimal) or (y_decimal and x.denominator != 1 and not x_decimal):
        return None
    return False


def math_level(raw: object) -> int | None:
    """``"Level 3"`` or ``3`` -> 3; ``"Level ?"`` -> None."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    m = re.search(r"\d+", str(raw or ""))
    return int(m.group(0)) if m else None


def subject_key(s: object) -> str:
    """"Counting & Probability", "counting_and_probability" -> "counting_and_probability"."""
    return re.sub(r"[^a-z0-9]+", "_", str(s).lower().replace("&", "and")).strip("_")


class MathTask(FileTask):
    name = "math"
    config_keys = (*FileTask.config_keys, "levels", "subjects")

    def __init__(self, question_field: str = "problem", answer_field: str = "answer",
                 solution_field: str = "solution", check_timeout: float = 5.0, check_workers: int | None = None):
        if importlib.util.find_spec("math_verify") is None:
            raise ImportError("the math task grades with math-verify: pip install 'math-verify[antlr4_9_3]'")
        self.question_field, self.answer_field, self.solution_field = question_field, answer_field, solution_field
        self.check_timeout, self.check_workers = check_timeout, check_workers

    @property
    def sandbox(self):
        return get_sandbox(timeout=self.check_timeout, workers=self.check_workers)

    def extract_answer(self, response: str) -> str | None:
        if not isinstance(response, str):
            return None
        answer = last_boxed(response)
        if answer is None:
            m = list(_FINAL.finditer(response[-4000:]))
            answer = stated_answer(response[-4000:][m[-1].start():]) if m else None
        if answer is None:
            return None
        answer = _strip_math_delimiters(answer.strip().rstrip(".").strip())
        return answer if answer and len(answer) <= MAX_ANSWER_CHARS else None

    def _bounded(self, pred: object, gold: object) -> bool:
        return (isinstance(pred, str) and isinstance(gold, str) and 0 < len(pred.strip())
                and len(pred) <= MAX_ANSWER_CHARS and 0 < len(gold.strip()) and len(gold) <= MAX_ANSWER_CHARS)

    def is_equivalent(self, pred: str | None, gold: str) -> bool:
        return self.equivalent_many([(pred, gold)])[0]

    def equivalent_many(self, pairs: Iterable[tuple[str | None, str]]) -> list[bool]:
        pairs = list(pairs)
        verdicts: list[bool | None] = []
        for pred, gold in pairs:
            try:
                verdicts.append(quick_verdict(pred, gold) if self._bounded(pred, gold) else False)
            except Exception:  # noqa: BLE001 - grading never raises
                log.warning("equivalence check failed: counted not equivalent", exc_info=True)
                verdicts.append(False)
        todo = [i for i, v in enumerate(verdicts) if v is None]
        if todo:
            try:
                symbolic = self.sandbox.check_many(
                    [(presentation_free(pairs[i][1]), presentation_free(pairs[i][0])) for i in todo])
            except Exception:  # noqa: BLE001
                log.warning("symbolic equivalence check failed: counted not equivalent", exc_info=True)
                symbolic = [False] * len(todo)
            for i, ok in zip(todo, symbolic):
                verdicts[i] = ok
        return [bool(v) for v in verdicts]

    def gold_answer(self, row: dict) -> str:
        answer = row.get(self.answer_field)
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)
        if isinstance(answer, str) and answer.strip():
            return (last_boxed(answer) or answer.strip()) if "boxed" in answer else answer.strip()
        solution = row.get(self.solution_field)
        if not isinstance(solution, str) or not solution.strip():
            raise BadRow(self.solution_field, "missing" if solution is None else "empty or not text")
        boxed = last_boxed(solution)
        if not boxed:
            raise BadRow(self.solution_field, "no \\boxed{} answer")
        return boxed

    def row_meta(self, row: dict) -> dict:
        return {
            "solution": row.get(self.solution_field),
            "level": math_level(row.get("level")),
            "subject": row.get("type") or row.get("subject"),
        }

    def row_filter(self, cfg: Mapping) -> Callable[[dict], bool]:
        """Whether a row's meta passes the ``dataset.levels`` and ``dataset.subjects`` filters (null: no filter)."""
        levels, subjects = cfg.get("levels"), cfg.get("subjects")
        if isinstance(levels, (str, int)):
            levels = [levels]
        if isinstance(subjects, str):
            subjects = [subjects]
        wanted_levels = None if levels is None else {math_level(x) for x in levels}
        wanted_subjects = None if subjects is None else {subject_key(x) for x in subjects}

        def keep(meta: dict) -> bool:
            if wanted_levels is not None and meta.get("level") not in wanted_levels:
                return False
            return wanted_subjects is None or subject_key(meta.get("subject")) in wanted_subjects

        return keep
