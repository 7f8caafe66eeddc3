"""What the SFT sets (mafl/finetune/sets.py) and the preference pairs (mafl/finetune/pairs.py) share: each
problem's label (the answer its examples must agree with, see mafl/finetune/sets.py), whether a turn agrees with
it, the seeded choice of examples, duplicates removed and caps, and the rows saved with their report beside them."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Iterable, Sequence

from mafl.debate.transcript import Transcript, Turn
from mafl.rundir import atomic_write_json, atomic_write_jsonl
from mafl.tasks.base import Task
from mafl.tasks.vote import public_consensus


def save_with_report(path: str | os.PathLike, report: dict, rows) -> Path:
    """Write ``rows`` as JSONL to ``path`` and ``report`` beside it (:func:`report_path`), each atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report_path(path), report)
    atomic_write_jsonl(path, rows)
    return path


def report_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".report.json")


# what a set's, pairs' or prompts' report counts about the selection (dedupe_and_cap, problems without a label)
SELECTION_COUNTS = ("duplicates_removed", "dropped_by_cap", "skipped_no_majority")


def read_report(path: str | os.PathLike) -> dict:
    """The report that :func:`save_with_report` wrote beside ``path`` ({} when there is none)."""
    report = report_path(path)
    return json.loads(report.read_text()) if report.exists() else {}


def checked_rows(path: str | os.PathLike, rows: list, report: dict, key: str) -> list:
    """``rows`` read from ``path``, refused (a ValueError) when they are not as many as its report counts under
    ``key``: a file cut at a line's end parses, and would be trained on short."""
    if key in report and report[key] != len(rows):
        raise ValueError(f"{path} holds {len(rows)} rows and its report {report_path(path).name} counts "
                         f"{report[key]}: cut short")
    return rows


def selection_counts(report: dict) -> dict:
    """The :data:`SELECTION_COUNTS` of a report (0 where it has none), as a loader's keyword arguments."""
    return {key: int(report.get(key, 0)) for key in SELECTION_COUNTS}


def _rng(seed: int, name: str, purpose: str) -> random.Random:
    return random.Random(f"{seed}/{name}/{purpose}")


def _sample(items: list, k: int, rng: random.Random) -> list:
    """``k`` items chosen by ``rng``, kept in their original order."""
    if k >= len(items):
        return list(items)
    keep = sorted(rng.sample(range(len(items)), max(k, 0)))
    return [items[i] for i in keep]


def dedupe(items: Iterable) -> tuple[list, int]:
    """Drop exact duplicates (the same ``key``: an example's prompt messages and response, a pair's prompt and both
    sides, a prompt's messages), keeping the first; returns (kept, removed)."""
    seen: set[str] = set()
    kept, removed = [], 0
    for item in items:
        if item.key in seen:
            removed += 1
        else:
            seen.add(item.key)
            kept.append(item)
    return kept, removed


def dedupe_and_cap(candidates: list, cap: int | None, rng: random.Random) -> tuple[list, int, int]:
    """:func:`dedupe`, then at most ``cap`` kept, chosen by ``rng`` in their order. Returns (kept, duplicates
    removed, dropped by the cap)."""
    kept, removed = dedupe(candidates)
    dropped = 0
    if cap is not None and len(kept) > cap:
        dropped = len(kept) - cap
        kept = _sample(kept, cap, rng)
    return kept, removed, dropped


def problem_label(t: Transcript, task: Task, min_agreement: float | None = 0.5) -> str | None:
    """The answer a problem's examples must agree with (see the module doc), or None: no examples."""
    if not t.rounds:
        return None
    if min_agreement is None:
        return public_consensus(task, [turn.answer for turn in t.rounds[-1]])
    if not t.votes or t.final_answer is None:
        return None
    votes = t.votes[0][1]
    return t.final_answer if votes > min_agreement * t.num_agents else None


def agrees(turn: Turn, label: str | None, task: Task) -> bool:
    """True when the turn's answer is equivalent to the label (a None label agrees with nothing, and a turn
    without an answer, e.g. a cut-off one, agrees with nothing)."""
    return label is not None and task.is_equivalent(turn.answer, label)


def problem_labels(transcripts: Sequence[Transcript], task: Task,
                   min_agreement: float | None = 0.5) -> list[str | None]:
    """:func:`problem_label` of every transcript."""
    return [problem_label(t, task, min_agreement) for t in transcripts]
