"""Arithmetic (the paper's first task): "What is the result of a+b*c+d-e*f?" with a..f drawn from [low, high].

Problems are generated, not loaded: the eval set comes from its own random stream (seeded by ``eval_seed``), the
train set from another that skips every eval question, so the two are disjoint and each is stable as its size
grows (the first 100 eval problems of ``n_eval=500`` are those of ``n_eval=100``).
"""
from __future__ import annotations

import random
from collections.abc import Mapping

from mafl.errors import integer
from mafl.tasks.base import Problem, Task
from mafl.tasks.numeric import NumericTask

QUESTION = "What is the result of {}+{}*{}+{}-{}*{}?"


class ArithmeticTask(NumericTask):
    name = "arithmetic"
    config_keys = ("low", "high")  # generated, not read: no files

    def __init__(self) -> None:
        super().__init__(question_field="question", answer_field="answer", integer=True)

    def check_config(self, cfg: Mapping) -> None:
        Task.check_config(self, cfg)  # generated, not read: no files to check
        integer(cfg, "high", "dataset", low=integer(cfg, "low", "dataset"))

    def load_problems(self, cfg: Mapping) -> tuple[list[Problem], list[Problem]]:
        return arithmetic_problems(cfg.get("n_train"), cfg.get("n_eval"), eval_seed=cfg.get("eval_seed", 0),
                                   train_seed=cfg.get("train_seed", 0), low=cfg.get("low", 0), high=cfg.get("high", 29),
                                   split=cfg.get("split", "eval"))


def arithmetic_value(a: int, b: int, c: int, d: int, e: int, f: int) -> int:
    return a + b * c + d - e * f


def _draw(rng: random.Random, count: int, low: int, high: int, taken: set, split: str) -> list[Problem]:
    space = (high - low + 1) ** 6
    if count > space - len(taken):
        raise ValueError(f"dataset.n_{split}={count}: only {space - len(taken)} distinct questions with "
                         f"operands in [{low}, {high}]")
    out: list[Problem] = []
    seen: set[tuple[int, ...]] = set()
    while len(out) < count:
        ops = tuple(rng.randint(low, high) for _ in range(6))
        if ops in taken or ops in seen:
            continue
        seen.add(ops)
        out.append(Problem(
            id=f"arithmetic/{split}/{len(out)}",
            question=QUESTION.format(*ops),
            answer=str(arithmetic_value(*ops)),
            meta={"operands": list(ops)},
        ))
    return out


def arithmetic_problems(n_train: int, n_eval: int, eval_seed: int = 0, train_seed: int = 0, low: int = 0,
                        high: int = 29, split: str = "eval") -> tuple[list[Problem], list[Problem]]:
    """(train, eval): ``n_train`` and ``n_eval`` distinct questions, no question in both; the eval problems
    drawn with ``eval_seed``, the train problems with ``train_seed``. ``split="dev"``: ``n_eval`` dev problems
    (a stream of their own, disjoint from the eval problems) in place of the eval problems."""
    for key, n in (("n_train", n_train), ("n_eval", n_eval)):
        if n is None or int(n) < 0:
            raise ValueError(f"dataset.{key} must be a count for arithmetic (problems are generated), got {n!r}")
    if int(low) > int(high):
        raise ValueError(f"dataset.low={low} > dataset.high={high}")
    eval_problems = _draw(random.Random(f"arithmetic/{eval_seed}/eval"), int(n_eval), int(low), int(high), set(), "eval")
    taken = {tuple(p.meta["operands"]) for p in eval_problems}
    if split == "dev":
        eval_problems = _draw(random.Random(f"arithmetic/{eval_seed}/dev"), int(n_eval), int(low), int(high), taken,
                              "dev")
        taken |= {tuple(p.meta["operands"]) for p in eval_problems}
    train_problems = _draw(random.Random(f"arithmetic/{train_seed}/train"), int(n_train), int(low), int(high), taken,
                           "train")
    return train_problems, eval_problems
