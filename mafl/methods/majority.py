"""``method=majority`` matched with the debate on answers or on generated tokens (``method.match``).

* ``answers`` (the default): ``method.samples`` answers per problem (N x R by default) in one round, then their
  majority vote; the shared loop (:func:`mafl.methods.society_loop.run_society_loop`).
* ``tokens``: every problem is sampled, one independent answer at a time, until the answers' generated tokens
  reach the target, the debate's mean generated tokens per problem (its answers and its summaries) on the same
  eval problems; then the majority vote of all of them. A problem stops at the first answer that reaches the
  target, so it overshoots by less than one answer; ``method.max_samples`` bounds the answers of any problem.
  The target comes from the debate run named by ``method.reference`` (its ``iter_0/eval/transcripts.jsonl``, which
  must hold the same problems), or, by default, is measured first: the run debates the eval problems itself with
  the run's debate settings (``iter_0/reference_debate``, the same seeds as a ``method=debate`` run of the same
  seed, so the same debate) and keeps the target in ``iter_0/eval/token_target.json``.

The k-th answer of a problem is sampled with the seed of the answer-matched majority's agent k: on a backend that
seeds each request (vLLM, an API that takes a seed) its first N x R answers are the answer-matched majority's; the
hf backend seeds a whole batch, so there they are other draws from the same distribution.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Sequence

from mafl.backends.base import Backend, GenerationRequest
from mafl.debate.engine import derive_seed, read_answers, run_debate, turn_sampling, voted_transcripts
from mafl.tasks.prompts import Prompts
from mafl.debate.settings import DebateSettings
from mafl.debate.society import Society
from mafl.debate.transcript import Transcript, Turn
from mafl.errors import ConfigError
from mafl.metrics.cutoff import generated_tokens
from mafl.rundir import atomic_write_json, read_jsonl
from mafl.run_folder import RunFolder
from mafl.tasks.base import Problem, Task

TARGET_FILE = "token_target.json"


def reference_file(reference: str) -> Path:
    """The untuned debate's eval transcripts in the run folder ``method.reference``."""
    return RunFolder(Path(reference).expanduser()).transcripts(0, "eval")


def token_matched_chunk(backend: Backend, task: Task, problems: Sequence[Problem], society: Society,
                        settings: DebateSettings, prompts: Prompts, seed: int, *, target: float,
                        max_samples: int) -> list[Transcript]:
    """Independent round-1 answers to each problem until its answers' generated tokens reach ``target`` (at most
    ``max_samples`` answers); one backend call per wave of answers, every problem still short of the target in
    it. The answers are one round of the transcript; its final answer is their majority vote."""
    model = society.speaker(0, 0)
    turns: list[list[Turn]] = [[] for _ in problems]
    spent = [0] * len(problems)
    for k in range(max_samples):
        active = [i for i in range(len(problems)) if spent[i] < target]
        if not active:
            break
        messages = [prompts.first_round(problems[i].question) for i in active]
        sampling = turn_sampling(settings, seed, 0, k)
        completions = backend.generate([GenerationRequest(m, adapter=society.adapter(model), sampling=sampling)
                                        for m in messages])
        answers, correct = read_answers(task, completions, [problems[i] for i in active])
        for i, msgs, c, answer, ok in zip(active, messages, completions, answers, correct):
            turns[i].append(Turn(agent=k, round=0, model=model, messages=msgs, response=c.text, answer=answer,
                                 correct=ok, num_tokens=c.num_tokens, finished=c.finished))
            spent[i] += c.num_tokens
    return voted_transcripts(task, problems, [[ts] for ts in turns], seed)


def check_majority(settings) -> None:
    """``method.reference`` and ``method.max_samples`` belong to ``method.match=tokens``; a reference is a
    finished debate run folder."""
    method = settings.method
    if method.match != "tokens":
        if method.reference:
            raise ConfigError(f"method.reference: only method.match=tokens matches a debate's tokens "
                              f"(got method.match={method.match})")
        return
    if method.reference and not reference_file(method.reference).is_file():
        where = reference_file(method.reference).relative_to(Path(method.reference).expanduser())
        raise ConfigError(f"method.reference: {method.reference} holds no {where} (not a finished debate run folder)")


def reference_transcripts(session, settings) -> tuple[list[Transcript], str]:
    """The debate whose tokens are matched, and where it comes from: the run named by ``method.reference``, or a
    debate of the eval problems run here first (``iter_0/reference_debate``)."""
    method = settings.method
    if method.reference:
        path = reference_file(method.reference)
        transcripts = [Transcript.from_json(d) for d in read_jsonl(path)]
        ours, theirs = sorted(p.id for p in session.eval), sorted(t.problem.id for t in transcripts)
        if ours != theirs:
            raise ConfigError(f"method.reference: {path} debated other problems than this run's "
                              f"{len(ours)} eval problems ({len(theirs)} problems, {len(set(theirs) - set(ours))} "
                              f"not among ours): use a debate run of the same dataset settings")
        return transcripts, str(path)
    debate = method.reference_debate
    society = Society(agents=debate.agents, critics=debate.critics and debate.rounds > 1, shared=False,
                      bases=settings.society.base_names)
    out_dir = session.run.split(0, "reference_debate")
    with session.run.timed(0, "reference_debate"):
        backend = session.generation.backend(society, stage=session.run.stage(0, "reference"))
        transcripts = run_debate(backend, session.task, session.eval, society, debate, session.prompts,
                                 seed=derive_seed(settings.seed, "eval"), out_dir=out_dir, progress=session.progress,
                                 desc="iteration 0: the debate whose tokens are matched")
    return transcripts, str(session.run.transcripts(0, "reference_debate"))


def token_matched_eval(session, society: Society):
    """The eval chunk function of ``method.match=tokens``: the target measured (or read), then
    :func:`token_matched_chunk` with it."""
    from mafl.progress import line

    settings = session.settings
    transcripts, source = reference_transcripts(session, settings)
    target = sum(generated_tokens(t) for t in transcripts) / len(transcripts)
    atomic_write_json(session.run.split(0, "eval") / TARGET_FILE,
                      {"target_tokens": target, "source": source, "problems": len(transcripts)})
    line(f"majority matched on tokens: {target:.1f} generated tokens per problem (the debate of {source})")
    return partial(token_matched_chunk, target=target, max_samples=settings.method.max_samples)


def run_majority(run_dir: Path, settings) -> dict:
    from mafl.methods.society_loop import run_society_loop

    if settings.method.match == "tokens":
        return run_society_loop(run_dir, settings, eval_chunk=token_matched_eval)
    return run_society_loop(run_dir, settings)
