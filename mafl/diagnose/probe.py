"""The diagnosis of one debate: a row per problem and agent, and its aggregation per round-1 agreement pattern.

Everything here reads the gold answer, for analysis only; the debate itself is the engine's
(:func:`mafl.debate.engine.run_debate`), run by :mod:`mafl.diagnose.command`.

Per turn (problem p, agent n; "final" is agent n's last-round turn, spoken by its critic with critics):

* ``round1_correct``, ``final_correct``: its round-1 and last-round answers against the gold answer;
  ``fresh_correct``: an independent round-1 sample of the same agent on the same problem (same sampling
  settings, another seed);
* ``vote_round1_correct``, ``vote_final_correct``: the majority vote of round 1 (a tie broken by a seed of the
  problem's id) and the debate's final answer (the last round's vote), against the gold answer;
* ``behaviour``: kept / adopted / new / unreadable (:func:`mafl.diagnose.patterns.behaviour`);
* teacher-forced probabilities of the task's reference response (:mod:`mafl.diagnose.references`): ``p_answer``,
  of the tokens of the gold answer it states at its end, and ``p_result``, of the tokens where its reasoning
  reaches the answer (tasks with worked references), each in the final turn's context (``*_final``: its messages,
  under its model) and in its round-1 context (``*_round1``: its round-1 messages, under its round-1 model);
* with summaries: ``summary_exact`` (:func:`mafl.diagnose.summaries.check_summary` on the summary the final turn
  read) and ``copy_probs``: for each number of the exact summary, the probability of its tokens when the exact
  summary is scored after the summarize prompt, under the model that wrote the summary (also averaged by the
  number's position in the summary: ``copy_prob_by_position``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

from mafl.backends.base import ScoringRequest
from mafl.debate.engine import _others, derive_seed
from mafl.debate.transcript import Transcript
from mafl.diagnose.patterns import BEHAVIOURS, agreement_pattern, behaviour, pattern_order
from mafl.diagnose.references import reference_response
from mafl.diagnose.spans import span_logprob
from mafl.diagnose.summaries import check_summary, exact_summary
from mafl.tasks.base import Task
from mafl.tasks.vote import majority_vote

PROBES = ("p_answer_final", "p_answer_round1", "p_result_final", "p_result_round1")


@dataclass
class TurnRow:
    problem: str
    agent: int
    pattern: str
    round1_correct: bool
    final_correct: bool
    fresh_correct: bool | None
    behaviour: str
    vote_round1_correct: bool = False  # the majority vote of the round-1 answers (the same for a problem's agents)
    vote_final_correct: bool = False  # the debate's final answer (the last round's vote)
    p_answer_final: float | None = None
    p_answer_round1: float | None = None
    p_result_final: float | None = None
    p_result_round1: float | None = None
    summary_exact: bool | None = None  # None: the turn read no summary
    copy_probs: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def read_answers(transcript: Transcript, agent: int, round: int, reads: Sequence[Sequence[int]],
                 max_others: int | None) -> list[tuple[int, str | None]]:
    """(agent index, answer) of each agent that ``agent`` read in round ``round`` (its others of round-1)."""
    answers = [t.answer for t in transcript.rounds[round - 1]]
    return _others(answers, reads[agent], max_others)


def turn_rows(task: Task, transcripts: Sequence[Transcript], fresh: Sequence[Transcript] | None,
              reads: Sequence[Sequence[int]], max_others: int | None) -> list[TurnRow]:
    """A row per problem and agent, without the probes (:func:`add_probes` fills them)."""
    if fresh is not None and [t.problem.id for t in fresh] != [t.problem.id for t in transcripts]:
        raise ValueError("the fresh samples are not of the debated problems")
    rows = []
    for p, t in enumerate(transcripts):
        first, last = t.rounds[0], t.rounds[-1]
        pattern = agreement_pattern(task, [u.answer for u in first])
        vote = majority_vote(task, [u.answer for u in first], tie_seed=derive_seed(t.problem.id, "diagnose vote"))
        vote_round1 = task.is_equivalent(vote.winner, t.problem.answer)
        for n, (u, v) in enumerate(zip(first, last)):
            read = [a for _, a in read_answers(t, n, 1, reads, max_others)] if len(t.rounds) > 1 else []
            summary = None
            if v.summary is not None:
                seen = read_answers(t, n, len(t.rounds) - 1, reads, max_others)
                summary = check_summary(task, v.summary, seen, finished=v.summary_finished is not False).exact
            rows.append(TurnRow(
                problem=t.problem.id, agent=n, pattern=pattern, round1_correct=bool(u.correct),
                final_correct=bool(v.correct),
                fresh_correct=bool(fresh[p].rounds[0][n].correct) if fresh is not None else None,
                behaviour=behaviour(task, v.answer, u.answer, read), vote_round1_correct=vote_round1,
                vote_final_correct=bool(t.correct), summary_exact=summary))
    return rows


def probe_requests(task: Task, transcripts: Sequence[Transcript], prompts, reads, max_others, adapter_of,
                   summary_writer) -> tuple[list[ScoringRequest], list[tuple]]:
    """The scoring requests of every probe and, for each, (row index, probe name, text, span) to read it back.
    ``adapter_of(model)``: the backend's name for a speaking model; ``summary_writer(agent, round)``: the
    backend's name for the model that wrote agent's summary in that round."""
    requests, keys = [], []
    for p, t in enumerate(transcripts):
        reference = reference_response(task, t.problem)
        last = len(t.rounds) - 1
        for n, (u, v) in enumerate(zip(t.rounds[0], t.rounds[-1])):
            row = p * len(t.rounds[0]) + n
            for where, turn in (("final", v), ("round1", u)):
                requests.append(ScoringRequest(turn.messages, reference.text, adapter=adapter_of(turn.model)))
                spans = [("p_answer_" + where, reference.answer)]
                if reference.result is not None:
                    spans.append(("p_result_" + where, reference.result))
                keys.append((row, spans, reference.text))
            if v.summary is not None:
                seen = read_answers(t, n, last, reads, max_others)
                text, spans = exact_summary(seen)
                if spans:
                    others = _others([w.response for w in t.rounds[last - 1]], reads[n], max_others)
                    requests.append(ScoringRequest(prompts.summarize_request(others), text,
                                                   adapter=summary_writer(n, last)))
                    keys.append((row, [("copy_probs", s) for s in spans], text))
    return requests, keys


def add_probes(rows: list[TurnRow], keys: list[tuple], scores, tokenizer) -> None:
    """Fill the rows' probes from the scores of :func:`probe_requests`' requests (probabilities; NaN: None)."""
    for (row, spans, text), score in zip(keys, scores):
        for name, span in spans:
            lp = span_logprob(tokenizer, text, score.token_logprobs, span)
            value = None if math.isnan(lp) else math.exp(lp)
            if name == "copy_probs":
                if value is not None:
                    rows[row].copy_probs.append(value)
            else:
                setattr(rows[row], name, value)


def _mean(values) -> dict:
    values = [float(v) for v in values if v is not None]
    return {"mean": sum(values) / len(values) if values else None, "n": len(values)}


def summarize_rows(rows: Sequence[TurnRow]) -> dict:
    """The statistics of a group of rows (one pattern, or all): counts, accuracies, behaviour shares, flip rates,
    probe means; each rate with its denominator ``n``."""
    turns = len(rows)
    wrong = [r for r in rows if not r.round1_correct]
    right = [r for r in rows if r.round1_correct]
    return {
        "problems": len({r.problem for r in rows}),
        "turns": turns,
        "accuracy": {
            "round1": _mean(r.round1_correct for r in rows),
            "final": _mean(r.final_correct for r in rows),
            "fresh": _mean(r.fresh_correct for r in rows),
            "vote_round1": _mean(r.vote_round1_correct for r in rows),
            "vote_final": _mean(r.vote_final_correct for r in rows),
        },
        "behaviour": {b: _mean(r.behaviour == b for r in rows) for b in BEHAVIOURS},
        "wrong_to_right": _mean(r.final_correct for r in wrong),
        "right_to_wrong": _mean(not r.final_correct for r in right),
        "probes": {name: _mean(getattr(r, name) for r in rows) for name in PROBES},
        "summary_exact": _mean(r.summary_exact for r in rows),
        "copy_prob": _mean(p for r in rows for p in r.copy_probs),
        # the k-th number of the exact summary (k-th agent read with a readable answer)
        "copy_prob_by_position": [_mean(r.copy_probs[k] for r in rows if len(r.copy_probs) > k)
                                  for k in range(max((len(r.copy_probs) for r in rows), default=0))],
    }


def pattern_table(rows: Sequence[TurnRow]) -> dict[str, dict]:
    """:func:`summarize_rows` of each round-1 agreement pattern (most agreement first), then ``all``."""
    patterns = sorted({r.pattern for r in rows}, key=pattern_order)
    table = {p: summarize_rows([r for r in rows if r.pattern == p]) for p in patterns}
    table["all"] = summarize_rows(rows)
    return table
