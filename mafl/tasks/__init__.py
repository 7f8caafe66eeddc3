"""Tasks: problems, answer extraction, equivalence grading and the majority vote.

    from mafl.tasks import get_task, load_splits, majority_vote
    task = get_task("gsm8k")                       # "arithmetic" | "gsm8k" | "math" | "jsonl"
    train, eval = load_splits(cfg.dataset)         # lists of Problem
    pred = task.extract_answer(response)           # str | None
    task.is_equivalent(pred, problem.answer)       # bool; never raises, bounded in time
    majority_vote(task, [a0, a1, a2]).winner       # str | None

Every task is registered below by name (``dataset.task``) and imported only when chosen. A task owns its
problems (``Task.load_problems``: generated, as Arithmetic's, or read from files and filtered, as MATH's) and the
checks of its dataset keys (``Task.check_config``). Adding a task: its module and its
``conf/dataset/<name>.yaml``, which names it by ``task: <module>:<class>`` (a task of mafl's own is also
registered here, so that its yaml says ``task: <name>``).
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mafl.errors import known_keys, plain
from mafl.registry import Registry
from mafl.tasks.base import DATASET_KEYS, BadRow, Problem, Task
from mafl.tasks.loading import DatasetError
from mafl.tasks.vote import Vote, majority_vote

if TYPE_CHECKING:
    from mafl.tasks.prompts import Prompts

TASKS: Registry[str] = Registry("task", "dataset.task")
TASKS.register("arithmetic", "mafl.tasks.arithmetic:ArithmeticTask")
TASKS.register("gsm8k", "mafl.tasks.numeric:GSM8KTask")
TASKS.register("math", "mafl.tasks.math_task:MathTask")
TASKS.register("jsonl", "mafl.tasks.jsonl:jsonl_task")


def get_task(name: str, **options: Any) -> Task:
    """The task called ``name`` (``TASKS``), built with its options, e.g. ``get_task("jsonl", answer_type="math")``
    or ``get_task("math", check_timeout=5.0)``."""
    return TASKS.load(name)(**options)


def task_options(dataset_cfg: Mapping) -> dict:
    """``dataset.task`` and whichever of the dataset's keys the task takes: what builds the task again elsewhere (a
    fine-tune that reads answers in another process), as :func:`task_from_config` reads it."""
    accepted = inspect.signature(TASKS.load(dataset_cfg["task"])).parameters
    return {"task": dataset_cfg["task"], **{k: dataset_cfg[k] for k in accepted if k in dataset_cfg}}


def task_from_config(dataset_cfg: Mapping) -> Task:
    """The task of a dataset config group: ``dataset.task`` plus whichever of its keys the task takes."""
    options = task_options(dataset_cfg)
    return TASKS.load(options.pop("task"))(**options)


def load_splits(dataset_cfg: Mapping) -> tuple[list[Problem], list[Problem]]:
    """(train, eval) problems of a dataset config group, as its task loads them (``eval_seed``, ``train_seed``).

    ``protocol: official`` (the public code's protocol) returns the eval problems as the train problems too: the
    society then fine-tunes on debates of the questions it is evaluated on."""
    cfg = plain(dataset_cfg)
    return _splits(task_from_config(cfg), cfg)


def _without_train(hub):
    return {**hub, "train_split": None} if isinstance(hub, Mapping) else hub


def _splits(task: Task, cfg: Mapping) -> tuple[list[Problem], list[Problem]]:
    train, eval_ = task.load_problems(cfg)
    if cfg.get("protocol", "heldout") == "official":
        return list(eval_), eval_
    return train, eval_


@dataclass(frozen=True)
class DatasetSettings:
    """``conf/dataset/*.yaml``: the task (which owns the checks of the other keys and loads the problems) and the
    prompt templates of the debate."""

    name: str
    task: Task
    prompts: "Prompts"
    options: dict  # every dataset.* key, as the task reads them

    @classmethod
    def from_cfg(cls, c: Mapping) -> "DatasetSettings":
        from mafl.tasks.prompts import Prompts

        options = plain(c)
        task = task_from_config(options)
        arguments = inspect.signature(TASKS.load(options["task"])).parameters
        known_keys(options, "dataset", [*DATASET_KEYS, *task.config_keys, *arguments])
        task.check_config(options)
        return cls(name=str(options.get("name") or options["task"]), task=task,
                   prompts=Prompts.from_cfg(options.get("prompts") or {}, review=options.get("review_prompt")),
                   options=options)

    def load_problems(self, train: bool = True) -> tuple[list[Problem], list[Problem]]:
        """(train, eval) problems, as the task loads them (see :func:`load_splits`). ``train=False``: a run that
        debates no train problem (no fine-tuning iteration) reads none and asks for none (``n_train``), unless its
        dev split is drawn from them."""
        options = self.options
        if not train and options.get("split", "eval") != "dev":
            options = {**options, "n_train": 0, "train_file": None, "hub": _without_train(options.get("hub"))}
        return _splits(self.task, options)


__all__ = ["TASKS", "DatasetSettings", "BadRow", "DatasetError", "Problem", "Task", "Vote", "get_task", "load_splits",
           "majority_vote", "task_from_config", "task_options"]
