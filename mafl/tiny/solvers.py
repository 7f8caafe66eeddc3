"""Worked answers of Arithmetic problems, right and wrong: the chain of thought and a declared noise model of solvers.

A worked answer is a chain of five steps, one operation each, products first::

    4*5=20, 7*8=56, 3+6=9, 9+20=29, 29-56=-27. The answer is -27.

Every number 0..999 is one token (mafl.tiny.tokenizer), so every answer has the same token layout.

The wrong answers of the corpus come from :class:`SolverNoise`, a model of how solvers err whose parameters are
fixed a priori (docs/tiny_model.md) and never fitted to any model's errors. A solver is wrong with probability
``wrong``; a wrong solver makes exactly one error, of one of three kinds, and carries it on consistently:

* ``carry``: a carry or borrow error on a multi-digit step: its result off by 10 (or by 100 on a 3-digit step);
* ``slip``: a small slip, a step's result off by 1 or 2;
* ``miscopy``: an operand of one of the first three steps copied off by one.

Some problems have a *trap*: their final subtraction needs a borrow in the ones place, and a solver that forgets it
writes a result 10 too far from zero. On such a problem a wrong solver falls into the trap with probability ``trap``
(instead of drawing an error kind), so wrong solvers of one problem often agree: agreement alone is no proof.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from mafl.tasks.arithmetic import QUESTION

ANSWER = "The answer is {answer}."
# the steps of a chain, by name: the two products, the small sum, the running sum, the difference
STEP_NAMES = ("b*c", "e*f", "a+d", "q+p1", "t-p2")
N_STEPS = len(STEP_NAMES)
OPERANDS = ("b", "c", "e", "f", "a", "d")  # the question's operands the first three steps copy


@dataclass(frozen=True)
class ArithmeticProblem:
    a: int
    b: int
    c: int
    d: int
    e: int
    f: int

    @property
    def question(self) -> str:
        """The Arithmetic task's question (one text for the corpus and the debate)."""
        return QUESTION.format(self.a, self.b, self.c, self.d, self.e, self.f)

    @property
    def answer(self) -> int:
        return self.a + self.b * self.c + self.d - self.e * self.f


def random_problem(rng: random.Random, low: int = 0, high: int = 29) -> ArithmeticProblem:
    return ArithmeticProblem(*(rng.randint(low, high) for _ in range(6)))


@dataclass(frozen=True)
class Step:
    left: int
    op: str
    right: int
    result: int

    @property
    def text(self) -> str:
        return f"{self.left}{self.op}{self.right}={self.result}"

    @property
    def expression(self) -> str:
        return f"{self.left}{self.op}{self.right}"


@dataclass(frozen=True)
class Error:
    """One error of a solver: ``kind`` (carry | slip | miscopy | trap), the step it hits, and either the amount
    its result is off by or (miscopy) which operand is copied as what."""

    kind: str
    step: int
    delta: int = 0
    operand: str | None = None
    copied: int | None = None


@dataclass(frozen=True)
class Chain:
    """A worked answer: its steps, its final number and the error that made it (None: a correct chain)."""

    steps: tuple[Step, ...]
    error: Error | None = None

    @property
    def answer(self) -> int:
        return self.steps[-1].result

    @property
    def text(self) -> str:
        return ", ".join(s.text for s in self.steps) + ". " + ANSWER.format(answer=self.answer)


def chain(p: ArithmeticProblem, error: Error | None = None) -> Chain:
    """The worked answer of ``p``, with ``error`` (if any) made and carried on consistently."""
    ops = {"a": p.a, "b": p.b, "c": p.c, "d": p.d, "e": p.e, "f": p.f}
    if error is not None and error.kind == "miscopy":
        ops[error.operand] = error.copied

    def off(i: int, value: int) -> int:
        return value + error.delta if error is not None and error.kind != "miscopy" and error.step == i else value

    p1 = off(0, ops["b"] * ops["c"])
    p2 = off(1, ops["e"] * ops["f"])
    q = off(2, ops["a"] + ops["d"])
    t = off(3, q + p1)
    r = off(4, t - p2)
    steps = (Step(ops["b"], "*", ops["c"], p1), Step(ops["e"], "*", ops["f"], p2), Step(ops["a"], "+", ops["d"], q),
             Step(q, "+", p1, t), Step(t, "-", p2, r))
    return Chain(steps, error)


def solve(p: ArithmeticProblem) -> tuple[str, int]:
    """The correct worked answer and its final number."""
    c = chain(p)
    return c.text, c.answer


def trap_delta(p: ArithmeticProblem) -> int | None:
    """The error of a solver that forgets the borrow of the final subtraction in the ones place (None when that
    subtraction needs no such borrow): ``t-p2`` computed as if the tens were not lowered, a result 10 too far
    from zero."""
    t, p2 = p.a + p.d + p.b * p.c, p.e * p.f
    big, small = (t, p2) if t >= p2 else (p2, t)
    if big % 10 >= small % 10:
        return None
    return 10 if t >= p2 else -10


@dataclass(frozen=True)
class SolverNoise:
    """The declared noise model of solvers (see the module docstring). Fixed before any measurement."""

    wrong: float = 0.4  # probability that a solver's chain holds an error
    # the kinds of error of a wrong solver (on a problem without a trap, or one who does not fall into it)
    kinds: dict = field(default_factory=lambda: {"carry": 0.6, "slip": 0.15, "miscopy": 0.25})
    trap: float = 0.5  # on a problem with a trap, the share of wrong solvers that fall into it

    def draw_error(self, p: ArithmeticProblem, rng: random.Random) -> Error:
        """The one error of a wrong solver of ``p`` (its chain's answer always differs from the gold answer)."""
        delta = trap_delta(p)
        if delta is not None and rng.random() < self.trap:
            return Error("trap", N_STEPS - 1, delta)
        kinds = list(self.kinds)
        while True:
            error = _draw_kind(rng.choices(kinds, [self.kinds[k] for k in kinds])[0], p, rng)
            if error is not None and _valid(chain(p, error), p):
                return error

    def solver(self, p: ArithmeticProblem, rng: random.Random) -> Chain:
        """One solver's worked answer: correct with probability ``1 - wrong``."""
        if rng.random() >= self.wrong:
            return chain(p)
        return chain(p, self.draw_error(p, rng))


def _valid(c: Chain, p: ArithmeticProblem) -> bool:
    """A wrong chain a solver could write: intermediate results not negative, operands 0..999, a wrong answer."""
    numbers = [n for s in c.steps[:-1] for n in (s.left, s.right, s.result)]
    return all(0 <= n <= 999 for n in numbers) and abs(c.answer) <= 999 and c.answer != p.answer


def _draw_kind(kind: str, p: ArithmeticProblem, rng: random.Random) -> Error | None:
    correct = chain(p).steps
    if kind == "carry":
        multi = [i for i, s in enumerate(correct) if abs(s.result) >= 10]
        if not multi:
            return None
        i = rng.choice(multi)
        size = 100 if abs(correct[i].result) >= 100 and rng.random() < 0.3 else 10
        return Error("carry", i, rng.choice([-1, 1]) * size)
    if kind == "slip":
        return Error("slip", rng.randrange(N_STEPS), rng.choice([-2, -1, 1, 2]))
    if kind == "miscopy":
        operand = rng.choice(OPERANDS)
        value = getattr(p, operand) + rng.choice([-1, 1])
        if value < 0:
            return None
        return Error("miscopy", OPERANDS.index(operand) // 2, operand=operand, copied=value)
    raise ValueError(f"unknown error kind {kind!r}; expected carry, slip or miscopy")


def first_difference(chains: list[Chain]) -> int | None:
    """The index of the first step where the chains do not all say the same (None: identical chains)."""
    for i in range(N_STEPS):
        if len({c.steps[i] for c in chains}) > 1:
            return i
    return None
