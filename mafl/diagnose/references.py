"""The reference response a diagnosis scores for a problem: the task's own (``task.reference_response``), or
the one registered here for the task's name.

Arithmetic's is the embedded model's worked answer (``mafl.tiny.corpus.solve``: one operation per step, then
``The answer is N.``), so that ``p(res)`` scores the chain the tiny model was pretrained on, whichever corpus
version: ``result`` is the last step's result, ``answer`` the final statement. (It lives here, not in the task:
the corpus is built on the task's question, so the task cannot import the corpus.)
"""
from __future__ import annotations

from mafl.registry import Registry
from mafl.tasks.base import Problem, Reference, Task

REFERENCES: Registry[str] = Registry("reference response", "dataset.task")
REFERENCES.register("arithmetic", "mafl.diagnose.references:arithmetic_reference")


def arithmetic_reference(task: Task, problem: Problem) -> Reference:
    from mafl.tiny.corpus import ArithmeticProblem, solve

    operands = problem.meta.get("operands")
    if not operands or len(operands) != 6:
        return task.reference_response(problem)
    text, _ = solve(ArithmeticProblem(*(int(x) for x in operands)))
    return Reference.locate(text, problem.answer)


def reference_response(task: Task, problem: Problem) -> Reference:
    name = getattr(task, "name", None)
    if name in REFERENCES:
        return REFERENCES.load(name)(task, problem)
    return task.reference_response(problem)
