"""Tasks: problems, answer extraction, equivalence grading and the majority vote.

    from mafl.tasks import get_task, load_splits, majority_vote
    task = get_task("gsm8k")                       # "arithmetic" | "gsm8k" | "math" | "jsonl"
    train, eval = load_splits(cfg.dataset)         # lists of Problem
    pred = task.extract_answer(response)           # str | None
    task.is_equivalent(pred, problem.answer)       # bool; never raises, bounded in time
    majority_vote(task, [a0, a1, a2]).winner       # str | None
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Callable

from mafl.tasks.arithmetic import ArithmeticTask
from mafl.tasks.base import BadRow, Problem, Task
from mafl.tasks.jsonl import jsonl_task
from mafl.tasks.loading import DatasetError, load_splits
from mafl.tasks.math_task import MathTask
from mafl.tasks.numeric import GSM8KTask
from mafl.tasks.vote import Vote, majority_vote

TASKS: dict[str, Callable[..., Task]] = {
    "arithmetic": ArithmeticTask,
    "gsm8k": GSM8KTask,
    "math": MathTask,
    "jsonl": jsonl_task,
}


def get_task(name: str, **options: Any) -> Task:
    """The task called ``name`` (``TASKS``), built with its options, e.g. ``get_task("jsonl", answer_type="math")``
    or ``get_task("math", check_timeout=5.0)``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name](**options)


def task_from_config(dataset_cfg: Mapping) -> Task:
    """The task of a dataset config group: ``dataset.task`` plus whichever of its keys the task takes."""
    name = dataset_cfg["task"]
    if name not in TASKS:
        raise ValueError(f"dataset.task={name!r} is unknown; choose one of {', '.join(TASKS)}")
    accepted = inspect.signature(TASKS[name]).parameters
    return get_task(name, **{k: dataset_cfg[k] for k in accepted if k in dataset_cfg})


__all__ = ["TASKS", "BadRow", "DatasetError", "Problem", "Task", "Vote", "get_task", "load_splits",
           "majority_vote", "task_from_config"]
