"""The embedded model's pretraining corpus: Arithmetic problems in every conversation format of a debate.

A problem is ``What is the result of a+b*c+d-e*f?`` (a..f drawn from [low, high]). Its worked answer is a short
chain of one operation per step (mafl.tiny.solvers), ending with exactly ``The answer is N.``. The wrong answers
the corpus shows come from the declared noise model of solvers, :class:`mafl.tiny.solvers.SolverNoise`.

Conversations are rendered with the prompts of ``conf/dataset/arithmetic.yaml`` (loaded from the file, so the
corpus always matches what the debate sends):

* ``round1``: ``system_generator`` + ``round1`` -> a correct worked answer;
* ``debate``: the agent's own conversation continued, as ``debate.context=conversation`` sends it: ``system_critic``,
  ``round1``, the agent's own round-1 answer (a solver of the noise model), then ``debate`` with 1-4 other agents'
  worked answers (solvers too) -> a critic reply that checks (:func:`critic_reply`; the loss is on it only);
* ``summarize``: a single user turn ``summarize`` with the others' answers -> ``Agent 1 says 12. Agent 2 says -3.``,
  every agent's answer stated by its label, none invented (copying by label);
* ``debate_summary``: the debate conversation whose {others} is the ``summary`` template -> a critic reply.

A critic reply first states every answer it was shown (``I said 12. Agent 1 says 12. Agent 3 says 2.``: recalling
numbers by their label), then:

* all the answers agree and are right: ``All agents agree on 12. The answer is 12.``;
* all agree on a wrong answer (a shared trap): ``All agents agree on 22. Checking:`` and the correct worked answer,
  so agreement is verified, not obeyed;
* the answers differ: with the others' chains in view (full answers) it names the first step where the chains
  differ and recomputes it (``The chains differ first at 7*8: 7*8=56.``), then ``Checking:`` and the correct worked
  answer; with a summary (final answers only) ``Checking:`` and the correct worked answer.

Every reply ends with the correct answer: no target ever copies a wrong one.
"""
from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

from mafl.tiny.solvers import (ANSWER, ArithmeticProblem, Chain, SolverNoise, chain, first_difference,
                               random_problem, solve)

# Bump when the corpus, the chain of thought or the tokenizer changes: it is part of the cache key.
CORPUS_VERSION = 7

SUMMARY_LINE = "Agent {agent} says {answer}."
KINDS = ("round1", "debate", "summarize", "debate_summary")
# how many other agents a critic reads in the corpus (weights): mostly 2, as in the default society of 3
OTHERS_COUNT = {1: 0.2, 2: 0.65, 3: 0.1, 4: 0.05}
NOISE = SolverNoise()

__all__ = ["ArithmeticProblem", "random_problem", "solve", "eval_problems", "load_prompts", "conversation",
           "critic_reply", "summary_text", "drill", "sample_conversations", "CORPUS_VERSION", "KINDS", "ANSWER"]


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


def eval_problems(n: int = 500, seed: int = 0, low: int = 0, high: int = 29) -> list[ArithmeticProblem]:
    """Held-out problems, drawn from a seed stream that the corpus never uses."""
    rng = random.Random(f"mafl-tiny-eval-{seed}")
    return [random_problem(rng, low, high) for _ in range(n)]


# --- what a critic says ------------------------------------------------------------------------------------

def summary_text(others: Sequence[tuple[int, Chain]]) -> str:
    """The exact summary of the others' answers: ``Agent 1 says 12. Agent 3 says -3.``"""
    return " ".join(SUMMARY_LINE.format(agent=agent, answer=c.answer) for agent, c in others)


def critic_reply(p: ArithmeticProblem, own: Chain, others: Sequence[tuple[int, Chain]], *, chains_shown: bool) -> str:
    """The reply of a critic that checks (see the module docstring). ``others``: (1-based label, chain) of each
    agent shown; ``chains_shown``: their worked answers are in view (False: only a summary of their answers)."""
    stated = " ".join([f"I said {own.answer}.", summary_text(others)])
    answers = {own.answer} | {c.answer for _, c in others}
    if len(answers) == 1:
        (agreed,) = answers
        if agreed == p.answer:
            return f"{stated} All agents agree on {agreed}. " + ANSWER.format(answer=agreed)
        return f"{stated} All agents agree on {agreed}. Checking: {solve(p)[0]}"
    check = ""
    if chains_shown:
        i = first_difference([own] + [c for _, c in others])
        if i is not None:
            right = chain(p).steps[i]
            check = f" The chains differ first at {right.expression}: {right.text}."
    return f"{stated}{check} Checking: {solve(p)[0]}"


# --- conversations -----------------------------------------------------------------------------------------

def _others_labels(rng: random.Random) -> list[int]:
    """The labels of the 1-4 others an agent reads, as in a society of k+1 where the speaker holds one label."""
    k = rng.choices(list(OTHERS_COUNT), list(OTHERS_COUNT.values()))[0]
    labels = list(range(1, k + 2))
    me = rng.choice(labels)
    return [a for a in labels if a != me]


def conversation(kind: str, p: ArithmeticProblem, rng: random.Random, prompts: Mapping[str, str],
                 noise: SolverNoise = NOISE) -> list[dict[str, str]]:
    """One chat of the given kind about problem ``p``; its last message is the assistant reply to learn."""
    if kind == "round1":
        return [{"role": "system", "content": prompts["system_generator"]},
                {"role": "user", "content": prompts["round1"].format(question=p.question)},
                {"role": "assistant", "content": solve(p)[0]}]
    if kind not in KINDS:
        raise ValueError(f"unknown conversation kind {kind!r}; expected one of {KINDS}")
    labels = _others_labels(rng)
    own = noise.solver(p, rng)
    others = [(agent, noise.solver(p, rng)) for agent in labels]
    block = "\n".join(prompts["other"].format(agent=agent, response=c.text) for agent, c in others)
    if kind == "summarize":
        return [{"role": "user", "content": prompts["summarize"].format(others=block)},
                {"role": "assistant", "content": summary_text(others)}]
    shown = kind == "debate"
    if not shown:
        block = prompts["summary"].format(summary=summary_text(others))
    return [{"role": "system", "content": prompts["system_critic"]},
            {"role": "user", "content": prompts["round1"].format(question=p.question)},
            {"role": "assistant", "content": own.text},
            {"role": "user", "content": prompts["debate"].format(question=p.question, others=block)},
            {"role": "assistant", "content": critic_reply(p, own, others, chains_shown=shown)}]


def drill(rng: random.Random, facts: int, low: int = 0, high: int = 29,
          big_share: float = 0.0) -> list[tuple[str, str]]:
    """Bare practice of the steps of a worked answer, as (``"12*24="``, ``"288"``) pairs: the two products, the
    small sum, the running sum and the difference of random problems, in the order a worked answer does them.

    A share ``big_share`` of the drilled problems give only their two multi-digit steps (the running sum and the
    difference), the ones a small model learns last."""
    out: list[tuple[str, str]] = []
    while len(out) < facts:
        steps = chain(random_problem(rng, low, high)).steps
        if big_share > 0 and rng.random() < big_share:
            steps = steps[3:]
        out += [(f"{s.expression}=", f"{s.result}") for s in steps]
    return out[:facts]


def sample_conversations(n: int, rng: random.Random, mix: Mapping[str, float],
                         prompts: Mapping[str, str], low: int = 0, high: int = 29) -> list[list[dict[str, str]]]:
    """``n`` conversations whose kinds are drawn with the weights of ``mix``."""
    kinds = [k for k in KINDS if mix.get(k, 0) > 0]
    weights = [mix[k] for k in kinds]
    return [conversation(kind, random_problem(rng, low, high), rng, prompts)
            for kind in rng.choices(kinds, weights, k=n)]


