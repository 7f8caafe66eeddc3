"""What a debate cost and what it lost to its token budget.

* ``cutoff/round<r>`` (r = 1, 2, ...): the share of round r's answers cut off by ``debate.max_new_tokens``
  (``Turn.finished`` false; such an answer never votes and never becomes a training target), mean over problems;
* ``cutoff/summary``: the share of summaries cut off by ``debate.summary_max_new_tokens`` (when the debate
  summarised);
* ``answers_per_problem``: the answers generated per problem (N agents x R rounds; summaries not counted), so
  that a table row says how much sampling its accuracy took;
* ``tokens/answers``, ``tokens/summaries``, ``tokens/total``: the tokens generated per problem (``num_tokens``,
  the closing eos included) for the answers, for the summaries the agents read, and both: what the row cost in
  generation, mean over problems.

A budget that is too small shows here rather than as a silently lower accuracy.
"""
from __future__ import annotations

from typing import Sequence

from mafl.debate.transcript import Transcript
from mafl.metrics.stats import MetricRecord, mean_record


def answer_tokens(t: Transcript) -> int:
    """The tokens generated for one problem's answers."""
    return sum(u.num_tokens for rnd in t.rounds for u in rnd)


def summary_tokens(t: Transcript) -> int:
    """The tokens generated for the summaries of one problem's debate."""
    return sum(u.summary_tokens for rnd in t.rounds for u in rnd)


def generated_tokens(t: Transcript) -> int:
    """Every token generated for one problem: its answers and its summaries."""
    return answer_tokens(t) + summary_tokens(t)


def cutoff_records(transcripts: Sequence[Transcript], *, iteration: int, split: str, samples: int,
                   seed: int) -> list[MetricRecord]:
    if not transcripts:
        return []
    common = dict(iteration=iteration, split=split, samples=samples, seed=seed)
    records = [mean_record([float(sum(len(rnd) for rnd in t.rounds)) for t in transcripts],
                           metric="answers_per_problem", **common)]
    answers = [float(answer_tokens(t)) for t in transcripts]
    summaries = [float(summary_tokens(t)) for t in transcripts]
    records += [mean_record(answers, metric="tokens/answers", **common),
                mean_record(summaries, metric="tokens/summaries", **common),
                mean_record([a + b for a, b in zip(answers, summaries)], metric="tokens/total", **common)]
    for r in range(min(len(t.rounds) for t in transcripts)):
        shares = [sum(not turn.finished for turn in t.rounds[r]) / len(t.rounds[r]) for t in transcripts]
        records.append(mean_record(shares, metric=f"cutoff/round{r + 1}", **common))
    summarised = [[turn for rnd in t.rounds for turn in rnd if turn.summary_finished is not None]
                  for t in transcripts]
    if any(summarised):
        shares = [sum(not turn.summary_finished for turn in turns) / len(turns) for turns in summarised if turns]
        records.append(mean_record(shares, metric="cutoff/summary", **common))
    return records
