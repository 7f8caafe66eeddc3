"""The debate: every agent of the society answers every problem, then reads the others and answers again.

All turns of one round are sent to the backend as one list (every agent, every problem of a chunk), so the
backend batches across agents and problems. Problems are debated in fixed chunks (``debate.chunk_size``; auto:
the backend's, as many problems as keep it busy: vLLM wants every request of a round at once); each finished
chunk is saved atomically, so a stopped debate keeps the chunks it finished, and a chunk's sampling seeds depend
only on the run seed, the debate's name and the chunk's index: a resumed debate gives the same transcripts as an
uninterrupted one.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Callable, Sequence

from mafl.backends.base import Backend, Completion, GenerationRequest, Sampling
from mafl.debate.settings import DebateSettings
from mafl.tasks.prompts import Prompts
from mafl.debate.society import Society, readers
from mafl.debate.transcript import Transcript, Turn
from mafl.rundir import atomic_write_jsonl, read_jsonl, read_stage_file
from mafl.tasks.base import Problem, Task

log = logging.getLogger("mafl")


def derive_seed(*parts) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _others(latest: Sequence[str], reads: Sequence[int], max_others: int | None) -> list[tuple[int, str]]:
    chosen = list(reads)[:max_others] if max_others else list(reads)
    return [(j, latest[j]) for j in chosen]


def turn_sampling(settings: DebateSettings, seed: int, round: int, agent: int, summary: bool = False) -> Sampling:
    """The sampling of agent ``agent``'s turn (or summary) in ``round`` of a chunk: each has its own seed."""
    return Sampling(
        temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
        max_new_tokens=settings.summary_max_new_tokens if summary else settings.max_new_tokens,
        seed=derive_seed(seed, round, agent, "summary" if summary else "turn"),
    )


def read_answers(task: Task, completions: Sequence[Completion],
                 problems: Sequence[Problem]) -> tuple[list[str | None], list[bool]]:
    """Each completion's answer (None for one cut off by its token budget) and whether it is right: graded against
    the gold answer for analysis only; nothing the agents see or learn from uses it."""
    answers = [task.extract_answer(c.text) if c.finished else None for c in completions]
    return answers, task.equivalent_many([(a, p.answer) for a, p in zip(answers, problems)])


def debate_chunk(backend: Backend, task: Task, problems: Sequence[Problem], society: Society,
                 settings: DebateSettings, prompts: Prompts, seed: int) -> list[Transcript]:
    """Debate ``problems`` for ``settings.rounds`` rounds; every round is one backend call (plus one for the
    round's summaries when ``settings.summarize``).

    A later round continues each agent's own conversation (``settings.context="conversation"``), starts a
    fresh prompt with the others' answers only (``"others"``), or continues the agent's own conversation with a
    request to review its own answer and nobody else's (``"self"``, self-refinement). Summaries are written by
    the untuned base model (``settings.summarizer="base"``, as in the paper's code; in a mixed society the reading
    agent's own base) or by the model about to speak (``"self"``). A response cut off by ``max_new_tokens``
    (``Completion.finished`` false) keeps its text but gets no answer: it never votes and never becomes a
    training target."""
    n_agents = settings.agents
    reads = readers(n_agents, settings.topology, settings.adjacency)

    def sampling(round: int, agent: int, summary: bool = False) -> Sampling:
        return turn_sampling(settings, seed, round, agent, summary)

    rounds: list[list[list[Turn]]] = [[] for _ in problems]  # [problem][round][agent]
    slots = [(p, n) for p in range(len(problems)) for n in range(n_agents)]
    for r in range(settings.rounds):
        summaries: dict[tuple[int, int], Completion] = {}
        if r > 0 and settings.summarize:
            requests = []
            for p, n in slots:
                latest = [t.response for t in rounds[p][r - 1]]
                writer = society.adapter(society.speaker(n, r)) if settings.summarizer == "self" else society.base(n)
                requests.append(GenerationRequest(
                    prompts.summarize_request(_others(latest, reads[n], settings.max_others)),
                    adapter=writer, sampling=sampling(r, n, summary=True)))
            summaries = dict(zip(slots, backend.generate(requests)))
        messages, requests = [], []
        for p, n in slots:
            model = society.speaker(n, r)
            if r == 0:
                msgs = prompts.first_round(problems[p].question)
            else:
                previous = rounds[p][r - 1]
                if settings.context == "self":  # self-refinement: the agent's own conversation, nobody else's
                    msgs = prompts.review_round(problems[p].question, previous[n].context())
                else:
                    latest = [t.response for t in previous]
                    summary = summaries[(p, n)].text if (p, n) in summaries else None
                    history = previous[n].context() if settings.context == "conversation" else None
                    msgs = prompts.later_round(problems[p].question, _others(latest, reads[n], settings.max_others),
                                               society.is_critic(n, r), summary=summary, history=history)
            messages.append(msgs)
            requests.append(GenerationRequest(msgs, adapter=society.adapter(model), sampling=sampling(r, n)))
        completions = backend.generate(requests)
        answers, correct = read_answers(task, completions, [problems[p] for p, _ in slots])
        for p in range(len(problems)):
            rounds[p].append([])
        for (p, n), msgs, c, answer, ok in zip(slots, messages, completions, answers, correct):
            summary = summaries.get((p, n))
            rounds[p][r].append(Turn(
                agent=n, round=r, model=society.speaker(n, r), messages=msgs, response=c.text, answer=answer,
                correct=ok, num_tokens=c.num_tokens, finished=c.finished,
                summary=summary.text if summary else None, summary_finished=summary.finished if summary else None,
                summary_tokens=summary.num_tokens if summary else 0,
            ))
    return voted_transcripts(task, problems, rounds, seed)


def voted_transcripts(task: Task, problems: Sequence[Problem], rounds: Sequence[list[list[Turn]]],
                      seed: int) -> list[Transcript]:
    """Each problem's transcript, its final answer the majority vote of its last round (a tie broken by a choice
    seeded from ``seed`` and the problem's id), graded against the gold answer (analysis only)."""
    from mafl.tasks.vote import majority_vote

    votes = [majority_vote(task, [t.answer for t in rnds[-1]], tie_seed=derive_seed(seed, problem.id, "vote"))
             for problem, rnds in zip(problems, rounds)]
    correct = task.equivalent_many([(v.winner, p.answer) for v, p in zip(votes, problems)])
    return [
        Transcript(problem=problem, rounds=list(rnds), final_answer=vote.winner, votes=list(vote.clusters),
                   correct=ok)
        for problem, rnds, vote, ok in zip(problems, rounds, votes, correct)
    ]


def _read_transcripts(path: Path) -> list[Transcript]:
    return [Transcript.from_json(d) for d in read_jsonl(path)]


def chunk_size_of(backend: Backend) -> int:
    """``debate.chunk_size=auto``: the backend's own (:attr:`Capabilities.chunk_size`), else 100 problems."""
    from mafl.backends.base import Capabilities

    return getattr(getattr(backend, "capabilities", None), "chunk_size", Capabilities.chunk_size)


def run_debate(backend: Backend, task: Task, problems: Sequence[Problem], society: Society,
               settings: DebateSettings, prompts: Prompts, *, seed: int, out_dir: Path | str,
               progress: bool = True, desc: str = "debate",
               on_chunk: Callable[[int, int], None] | None = None,
               chunk_fn: Callable[..., list[Transcript]] | None = None) -> list[Transcript]:
    """Debate every problem, chunk by chunk, keeping each finished chunk in ``out_dir/chunks``; then write
    ``out_dir/transcripts.jsonl``. Chunks already on disk are read back, not debated again. ``chunk_fn``: what
    answers one chunk, with :func:`debate_chunk`'s arguments (default: it; the token-matched majority's sampler,
    :func:`mafl.methods.majority.token_matched_chunk`)."""
    out_dir = Path(out_dir)
    final = out_dir / "transcripts.jsonl"
    found = read_stage_file(final, _read_transcripts)
    if found is not None and [t.problem.id for t in found] == [p.id for p in problems]:
        return found
    if found is not None:
        log.warning("%s holds other problems than the debate's (cut short?): it is made again from the chunks", final)
    size = settings.chunk_size or chunk_size_of(backend)
    chunks = [problems[i:i + size] for i in range(0, len(problems), size)]
    transcripts: list[Transcript] = []
    from mafl.progress import stage

    bar = stage(desc, total=len(problems), unit="problem") if progress else None
    for k, chunk in enumerate(chunks):
        path = out_dir / "chunks" / f"chunk_{k:05d}.jsonl"
        ids = [p.id for p in chunk]
        done = read_stage_file(path, _read_transcripts)
        if done is not None and [t.problem.id for t in done] != ids:
            done = None  # a chunk of another problem list: debate it again
        if done is None:
            done = (chunk_fn or debate_chunk)(backend, task, chunk, society, settings, prompts,
                                              seed=derive_seed(seed, k))
            atomic_write_jsonl(path, (t.to_json() for t in done))
        transcripts += done
        if bar is not None:
            bar.update(len(chunk))
        if on_chunk is not None:
            on_chunk(k, len(chunks))
    if bar is not None:
        bar.close()
    atomic_write_jsonl(final, (t.to_json() for t in transcripts))
    return transcripts
