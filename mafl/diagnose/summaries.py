"""Whether a summary of the other agents' answers is exact, read with the task's own answer extraction.

A summary is cut at every mention of an agent (``Agent 2``, case-insensitive); the text from a mention to the next
one is that agent's statement, and its answer is ``task.extract_answer`` of it (a mention with no answer of its
own, as in ``Agent 1 and Agent 2 say 12``, shares the next statement's). An agent mentioned twice keeps its first
statement. Against the answers the summariser read (1-based labels, as the ``other`` prompt template writes them):

* ``missing``: an agent read, whose answer could be read, is not mentioned;
* ``wrong``: it is mentioned with no answer, or one not equivalent to its own;
* ``invented``: an agent is mentioned that was not read;
* **exact**: none of these, and the summary was not cut off. An agent whose own answer could not be read is
  neither required nor judged.

:data:`EXACT_SUMMARY` writes the exact summary (the embedded model's summary format,
``mafl.tiny.corpus.SUMMARY_LINE``) whose numbers' copy probabilities the diagnosis measures.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from mafl.diagnose.patterns import same
from mafl.tasks.base import Task

MENTION = re.compile(r"\bagent\s*#?\s*(\d{1,4})\b", re.I)
EXACT_SUMMARY = "Agent {agent} says {answer}."


@dataclass(frozen=True)
class SummaryCheck:
    exact: bool
    missing: list[int] = field(default_factory=list)  # 1-based labels
    wrong: list[int] = field(default_factory=list)
    invented: list[int] = field(default_factory=list)


def statements(task: Task, summary: str) -> dict[int, str | None]:
    """Each mentioned agent's label -> the answer its statement gives (None: none could be read)."""
    mentions = list(MENTION.finditer(summary))
    answers: list[str | None] = [None] * len(mentions)
    for k in reversed(range(len(mentions))):
        end = mentions[k + 1].start() if k + 1 < len(mentions) else len(summary)
        answers[k] = task.extract_answer(summary[mentions[k].end():end])
        if answers[k] is None and k + 1 < len(mentions):
            answers[k] = answers[k + 1]
    out: dict[int, str | None] = {}
    for m, a in zip(mentions, answers):
        out.setdefault(int(m.group(1)), a)
    return out


def check_summary(task: Task, summary: str, read: Sequence[tuple[int, str | None]], finished: bool = True
                  ) -> SummaryCheck:
    """``read``: (0-based agent index, its answer) of every agent the summariser read."""
    said = statements(task, summary)
    labels = {j + 1: a for j, a in read}
    missing = [k for k, a in labels.items() if a is not None and k not in said]
    wrong = [k for k, a in labels.items() if a is not None and k in said and not same(task, said[k], a)]
    invented = sorted(k for k in said if k not in labels)
    return SummaryCheck(exact=finished and not (missing or wrong or invented), missing=missing, wrong=wrong,
                        invented=invented)


def exact_summary(read: Sequence[tuple[int, str | None]]) -> tuple[str, list[tuple[int, int]]]:
    """The exact summary of the readable answers read, and the (start, end) characters of each answer in it."""
    text, spans = "", []
    for j, answer in read:
        if answer is None:
            continue
        line = EXACT_SUMMARY.format(agent=j + 1, answer=answer)
        head = EXACT_SUMMARY.split("{answer}")[0].format(agent=j + 1)
        text += (" " if text else "")
        spans.append((len(text) + len(head), len(text) + len(head) + len(answer)))
        text += line
    return text, spans
