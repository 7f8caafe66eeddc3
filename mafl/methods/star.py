"""STaR, the Self-Taught Reasoner (Zelikman et al. 2022), on the shared loop.

Every iteration, the model of the previous iteration (one shared model; ``debate.agents`` samples per problem,
1 in the paper) answers the train problems once (``iter_k/train``). Rationales whose answer matches the ground
truth are kept. For the problems it got wrong, *rationalisation*: it is asked again with the correct answer given
as a hint, ``method.rationalize`` (fields ``{question}`` and ``{answer}``) in place of the question
(``iter_k/rationalize``); rationalised responses that reach the answer are kept too. Both are trained with the
original prompt, without the hint. The model is then fine-tuned on them (from the base model when
``finetune.init=base``, as in the paper) and evaluated alone, one answer per problem.
"""
from __future__ import annotations

import string
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from mafl.config import Settings
from mafl.errors import ConfigError
from mafl.debate.engine import derive_seed, run_debate
from mafl.tasks.prompts import Prompts
from mafl.debate.society import Society
from mafl.debate.transcript import Transcript
from mafl.finetune.sets import Example, FinetuneSet, merge_sets
from mafl.methods.society_loop import run_society_loop
from mafl.session import Session
from mafl.tasks.base import Problem, Task

RATIONALE, RATIONALIZATION = "rationale", "rationalization"
HINT_FIELDS = {"question", "answer"}


def check_hint(template) -> str:
    """The rationalisation template; a ConfigError names ``method.rationalize`` when it cannot work."""
    if not isinstance(template, str) or "{answer}" not in template or "{question}" not in template:
        raise ConfigError(f"method.rationalize: needs a template with {{question}} and {{answer}} (got {template!r})")
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ConfigError(f"method.rationalize: not a valid template ({e})") from None
    if used - HINT_FIELDS:
        unknown = sorted(used - HINT_FIELDS)
        raise ConfigError(f"method.rationalize: unknown field(s) {unknown}; allowed: question, answer")
    return template


def hinted(problem: Problem, template: str) -> Problem:
    """The problem with the correct answer given as a hint in its question (same id and gold answer)."""
    return replace(problem, question=template.format(question=problem.question, answer=problem.answer))


def reaches_answer(task: Task, answer: str | None, problem: Problem) -> bool:
    return task.is_equivalent(answer, problem.answer)


def failed_problems(transcripts: Sequence[Transcript], task: Task) -> list[Problem]:
    """The problems none of whose round-1 samples reached the ground truth."""
    return [t.problem for t in transcripts
            if not any(reaches_answer(task, turn.answer, t.problem) for turn in t.rounds[0])]


def star_set(rationales: Sequence[Transcript], rationalized: Sequence[Transcript], originals: dict[str, Problem],
             task: Task, prompts: Prompts, *, name: str = "model", seed: int = 0,
             max_examples: int | None = None) -> FinetuneSet:
    """The round-1 responses that reach the ground truth: rationales with the prompt they were given, then
    rationalisations with the original prompt (the question without the hint). Deduplicated, optionally capped."""
    examples = []
    for t in rationales:
        for turn in t.rounds[0]:
            if reaches_answer(task, turn.answer, t.problem):
                examples.append(Example(prompt=[dict(m) for m in turn.messages], response=turn.response,
                                        problem_id=t.problem.id, correct=True, kind=RATIONALE))
    for t in rationalized:
        original = originals[t.problem.id]
        for turn in t.rounds[0]:
            if reaches_answer(task, turn.answer, original):
                examples.append(Example(prompt=prompts.first_round(original.question), response=turn.response,
                                        problem_id=original.id, correct=True, kind=RATIONALIZATION))
    return merge_sets([FinetuneSet(name=name, examples=examples)], name=name, seed=seed, max_examples=max_examples)


def star_train_sets(session: Session, society: Society, iteration: int) -> dict[str, FinetuneSet]:
    cfg = session.settings
    template = session.settings.method.rationalize
    backend = session.generation.backend(society, stage=session.run.stage(iteration, "train"))
    with session.run.timed(iteration, "train_debate"):  # the rationales and the rationalisations
        rationales = run_debate(
            backend, session.task, session.train, society, session.debate, session.prompts,
            seed=derive_seed(cfg.seed, "train", iteration), out_dir=session.run.split(iteration, "train"),
            progress=session.progress, desc=f"iteration {iteration}: rationales (train)")
        failed = failed_problems(rationales, session.task)
        rationalized = run_debate(
            backend, session.task, [hinted(p, template) for p in failed], society, session.debate, session.prompts,
            seed=derive_seed(cfg.seed, "rationalize", iteration), out_dir=session.run.split(iteration, "rationalize"),
            progress=session.progress, desc=f"iteration {iteration}: rationalisation ({len(failed)} problems)")
    originals = {p.id: p for p in failed}
    name = society.models[0]
    return {name: star_set(rationales, rationalized, originals, session.task, session.prompts, name=name,
                           seed=derive_seed(cfg.seed, "sets", iteration),
                           max_examples=session.finetune.max_examples)}


def check_star(settings: Settings) -> None:
    """STaR's own checks of a run's settings (before any work): one round, a usable rationalisation template."""
    if settings.debate.rounds != 1:
        raise ConfigError(f"debate.rounds: star answers each problem in one round (got {settings.debate.rounds})")
    check_hint(settings.method.rationalize)


def run_star(run_dir: Path, settings: Settings) -> dict:
    return run_society_loop(run_dir, settings, train_sets=star_train_sets)
