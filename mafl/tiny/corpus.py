"""The embedded model's pretraining corpus: Arithmetic problems in every conversation format of a debate.

A problem is ``What is the result of a+b*c+d-e*f?`` (a..f drawn from [low, high]). Its worked answer is a
short chain of thought that a tiny model can follow one small step at a time: one operation per step
(the two products, a+d, the running sum, the difference), and the response ends with exactly
``The answer is N.``.

Conversations are rendered with the prompts of ``conf/dataset/arithmetic.yaml`` (loaded from the file, so
the corpus always matches what the debate sends):

* round 1: ``system_generator`` + ``round1`` -> a correct worked answer;
* debate: the agent's own conversation continued, as ``debate.context=conversation`` sends it:
  ``system_critic``, ``round1``, the agent's own round-1 answer (wrong by one slipped step with probability 1/2),
  then ``debate`` with 1-2 other agents' worked answers (each wrong with probability 1/2) -> a correct worked
  answer (the loss is on this last reply only);
* summarize: a single user turn ``summarize`` with the others' answers (as the summariser is asked) ->
  ``Agent 1 says 12. Agent 2 says -3.``;
* debate after a summary: the debate conversation whose {others} is the ``summary`` template -> a correct
  worked answer.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from mafl.tasks.arithmetic import QUESTION

# Bump when the corpus, the chain of thought or the tokenizer changes: it is part of the cache key.
CORPUS_VERSION = 5

ANSWER = "The answer is {answer}."
SUMMARY_LINE = "Agent {agent} says {answer}."
KINDS = ("round1", "debate", "summarize", "debate_summary")


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


def conf_dir() -> Path:
    import mafl

    return Path(mafl.__file__).resolve().parent / "conf"


@lru_cache(maxsize=None)
def _load_prompts(path: str) -> tuple[tuple[str, str], ...]:
    from omegaconf import OmegaConf

    prompts = OmegaConf.to_container(OmegaConf.load(path).prompts, resolve=False)
    return tuple(sorted((str(k), str(v)) for k, v in prompts.items()))


def load_prompts(path: str | Path | None = None) -> dict[str, str]:
    """The Arithmetic prompts of ``conf/dataset/arithmetic.yaml`` (system_generator, round1, debate, ...)."""
    return dict(_load_prompts(str(path or conf_dir() / "dataset" / "arithmetic.yaml")))


def random_problem(rng: random.Random, low: int = 0, high: int = 29) -> ArithmeticProblem:
    return ArithmeticProblem(*(rng.randint(low, high) for _ in range(6)))


def eval_problems(n: int = 500, seed: int = 0, low: int = 0, high: int = 29) -> list[ArithmeticProblem]:
    """Held-out problems, drawn from a seed stream that the corpus never uses."""
    rng = random.Random(f"mafl-tiny-eval-{seed}")
    return [random_problem(rng, low, high) for _ in range(n)]


# --- the chain of thought -------------------------------------------------------------------------------

def solve(p: ArithmeticProblem, slip: tuple[int, int] | None = None) -> tuple[str, int]:
    """The worked answer and its final number; ``slip=(step, delta)`` adds ``delta`` to one step's result
    and carries the error on consistently (an agent that slipped once).

    One operation per step, products first: ``4*5=20, 7*8=56, 3+6=9, 9+20=29, 29-56=-27. The answer is -27.``
    Every number 0..999 is one token (see mafl.tiny.tokenizer), so every answer has the same token layout:
    each operand is copied from a fixed offset (the question or an earlier step), and each step is a function
    of two number tokens (whose embeddings start as place-value sums, see mafl.tiny.pretrain).
    """
    def step(i: int, value: int) -> int:
        return value + slip[1] if slip is not None and slip[0] == i else value

    p1 = step(0, p.b * p.c)
    p2 = step(1, p.e * p.f)
    q = step(2, p.a + p.d)
    t = step(3, q + p1)
    r = step(4, t - p2)
    text = f"{p.b}*{p.c}={p1}, {p.e}*{p.f}={p2}, {p.a}+{p.d}={q}, {q}+{p1}={t}, {t}-{p2}={r}. "
    return text + ANSWER.format(answer=r), r


N_STEPS = 5


def slipped(p: ArithmeticProblem, rng: random.Random) -> tuple[str, int]:
    """A plausible wrong worked answer: one step off by a small or a carry-sized amount."""
    while True:
        slip = (rng.randrange(N_STEPS), rng.choice([-20, -10, -2, -1, 1, 2, 10, 20]))
        intermediate = [p.b * p.c, p.e * p.f, p.a + p.d, p.a + p.d + p.b * p.c]
        if slip[0] < len(intermediate) and intermediate[slip[0]] + slip[1] < 0:
            continue  # only the difference may be negative
        text, answer = solve(p, slip)
        if answer != p.answer:
            return text, answer


# --- conversations ---------------------------------------------------------------------------------------

def _others(p: ArithmeticProblem, rng: random.Random, prompts: Mapping[str, str]) -> tuple[str, str]:
    """1-2 other agents' worked answers (each wrong with probability 1/2), as the {others} block and as a
    summary of their final answers."""
    k = rng.choice([1, 2])
    agents = sorted(rng.sample(range(1, k + 2), k))
    blocks, lines = [], []
    for agent in agents:
        text, answer = slipped(p, rng) if rng.random() < 0.5 else solve(p)
        blocks.append(prompts["other"].format(agent=agent, response=text))
        lines.append(SUMMARY_LINE.format(agent=agent, answer=answer))
    return "\n".join(blocks), " ".join(lines)


def conversation(kind: str, p: ArithmeticProblem, rng: random.Random,
                 prompts: Mapping[str, str]) -> list[dict[str, str]]:
    """One chat of the given kind about problem ``p``; its last message is the assistant reply to learn."""
    if kind == "round1":
        return [{"role": "system", "content": prompts["system_generator"]},
                {"role": "user", "content": prompts["round1"].format(question=p.question)},
                {"role": "assistant", "content": solve(p)[0]}]
    others, summary = _others(p, rng, prompts)
    if kind == "summarize":
        return [{"role": "user", "content": prompts["summarize"].format(others=others)},
                {"role": "assistant", "content": summary}]
    if kind == "debate_summary":
        others = prompts["summary"].format(summary=summary)
    elif kind != "debate":
        raise ValueError(f"unknown conversation kind {kind!r}; expected one of {KINDS}")
    own = slipped(p, rng)[0] if rng.random() < 0.5 else solve(p)[0]
    return [{"role": "system", "content": prompts["system_critic"]},
            {"role": "user", "content": prompts["round1"].format(question=p.question)},
            {"role": "assistant", "content": own},
            {"role": "user", "content": prompts["debate"].format(question=p.question, others=others)},
            {"role": "assistant", "content": solve(p)[0]}]


def drill(rng: random.Random, facts: int, low: int = 0, high: int = 29,
          big_share: float = 0.0) -> list[tuple[str, str]]:
    """Bare practice of the steps of a worked answer, as (``"12*24="``, ``"288"``) pairs: the two products, the
    small sum, the running sum and the difference of random problems, in the order a worked answer does them.

    A share ``big_share`` of the drilled problems give only their two multi-digit steps (the running sum and the
    difference), the ones a small model learns last."""
    out: list[tuple[str, str]] = []
    while len(out) < facts:
        p = random_problem(rng, low, high)
        p1, p2, q = p.b * p.c, p.e * p.f, p.a + p.d
        big = [(f"{q}+{p1}=", f"{q + p1}"), (f"{q + p1}-{p2}=", f"{q + p1 - p2}")]
        if big_share > 0 and rng.random() < big_share:
            out += big
        else:
            out += [(f"{p.b}*{p.c}=", f"{p1}"), (f"{p.e}*{p.f}=", f"{p2}"), (f"{p.a}+{p.d}=", f"{q}")] + big
    return out[:facts]


def sample_conversations(n: int, rng: random.Random, mix: Mapping[str, float],
                         prompts: Mapping[str, str], low: int = 0, high: int = 29) -> list[list[dict[str, str]]]:
    """``n`` conversations whose kinds are drawn with the weights of ``mix``."""
    kinds = [k for k in KINDS if mix.get(k, 0) > 0]
    weights = [mix[k] for k in kinds]
    return [conversation(kind, random_problem(rng, low, high), rng, prompts)
            for kind in rng.choices(kinds, weights, k=n)]
