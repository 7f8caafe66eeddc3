"""Preference pairs cut from debate transcripts: for each model of the society, (prompt, chosen, rejected) triples
from its own turns, for DPO (``finetune.objective: dpo | sft+dpo``).

Like the fine-tuning sets (:mod:`mafl.finetune.sets`), pairs use the debate's own answers, never the gold answer: a
problem's label is the same strict-majority final answer (``finetune.min_agreement``), and a problem without one
gives no pairs. A model's turns are those the sets take from (``generator_n``: agent n's round-1 turns, or every
round without critics; ``critic_n``: agent n's final-round turns). For each such turn ``t`` (agent n, round r) of a
labelled problem:

* ``t`` agrees with the label: ``chosen = t``; ``rejected`` is one response on the same problem that does not
  agree, drawn first from agent n's own responses of the other rounds (kind ``self``: e.g. a critic's own wrong
  round-1 answer, the D- signal), else from the other agents' responses of round r (kind ``peer_rejected``).
* ``t`` does not agree and another agent's round-r response does: ``rejected = t``, ``chosen`` one of those
  (kind ``peer_chosen``).

The pair's prompt is always ``t``'s own messages: exactly the context the model answered in. A pair never has two
equivalent answers (``task.is_equivalent``), and its chosen side always has an answer (a cut-off turn may only be
rejected). One pair per turn; every choice among candidates is drawn from ``random.Random(f"{seed}/{name}/...")``
(as the sets do), so pairs are deterministic by seed and differ between models. Exact duplicates (same prompt,
chosen and rejected) are removed and counted; ``max_pairs`` caps a model's pairs (dropped by seed).

``chosen_correct`` / ``rejected_correct`` are carried for analysis only: ``label_accuracy`` in the report is the
share of pairs whose chosen side is right and rejected side wrong by the gold answer.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from mafl.debate.transcript import Transcript, Turn
from mafl.finetune.labels import (_rng, agrees, checked_rows, dedupe_and_cap, problem_labels, read_report,
                                  save_with_report, selection_counts)
from mafl.rundir import read_jsonl
from mafl.tasks.base import Task

SELF, PEER_REJECTED, PEER_CHOSEN = "self", "peer_rejected", "peer_chosen"
KINDS = (SELF, PEER_REJECTED, PEER_CHOSEN)
SUFFIX = ".pairs.jsonl"  # a model's pairs beside its set: iter_k/sets/<model>.pairs.jsonl


@dataclass(frozen=True)
class Pair:
    """One preference pair: the prompt messages exactly as the model's turn was given them, two responses."""

    prompt: tuple[dict, ...] | list[dict]
    chosen: str
    rejected: str
    problem_id: str
    chosen_correct: bool  # analysis only, never used for selection
    rejected_correct: bool
    kind: str = SELF

    @property
    def key(self) -> str:
        return json.dumps([list(self.prompt), self.chosen, self.rejected], sort_keys=True, ensure_ascii=False)

    def to_json(self) -> dict:
        """trl's conversational preference form (prompt, chosen, rejected), plus analysis fields."""
        return {
            "prompt": [dict(m) for m in self.prompt],
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
            "problem_id": self.problem_id,
            "chosen_correct": self.chosen_correct,
            "rejected_correct": self.rejected_correct,
            "kind": self.kind,
        }

    @classmethod
    def from_json(cls, d: dict) -> "Pair":
        return cls(prompt=[dict(m) for m in d["prompt"]], chosen=d["chosen"][0]["content"],
                   rejected=d["rejected"][0]["content"], problem_id=str(d.get("problem_id", "")),
                   chosen_correct=bool(d.get("chosen_correct", False)),
                   rejected_correct=bool(d.get("rejected_correct", False)), kind=d.get("kind", SELF))


@dataclass
class PairSet:
    """The preference pairs of one model (``name``: its adapter name) and how they were chosen."""

    name: str
    pairs: list[Pair] = field(default_factory=list)
    duplicates_removed: int = 0
    dropped_by_cap: int = 0
    skipped_no_majority: int = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def report(self) -> dict:
        n = len(self.pairs)

        def share(xs) -> float | None:
            return sum(xs) / n if n else None

        return {
            "name": self.name,
            "pairs": n,
            "label_accuracy": share(p.chosen_correct and not p.rejected_correct for p in self.pairs),
            "chosen_accuracy": share(p.chosen_correct for p in self.pairs),
            "rejected_accuracy": share(p.rejected_correct for p in self.pairs),
            "kinds": dict(Counter(p.kind for p in self.pairs)),
            "duplicates_removed": self.duplicates_removed,
            "dropped_by_cap": self.dropped_by_cap,
            "skipped_no_majority": self.skipped_no_majority,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """The pairs as JSONL and the report beside them (``<model>.pairs.report.json``), each atomically."""
        return save_with_report(path, self.report(), (p.to_json() for p in self.pairs))

    @classmethod
    def load(cls, path: str | os.PathLike, name: str | None = None) -> "PairSet":
        path = Path(path)
        meta = read_report(path)
        return cls(name=name or meta.get("name") or path.name.removesuffix(SUFFIX),
                   pairs=checked_rows(path, [Pair.from_json(row) for row in read_jsonl(path)], meta, "pairs"),
                   **selection_counts(meta))


def pairs_path(sets_dir: str | os.PathLike, model: str) -> Path:
    return Path(sets_dir) / f"{model}{SUFFIX}"


def _pair(turn: Turn, chosen: Turn, rejected: Turn, t: Transcript, kind: str) -> Pair:
    return Pair(prompt=[dict(m) for m in turn.messages], chosen=chosen.response, rejected=rejected.response,
                problem_id=t.problem.id, chosen_correct=bool(chosen.correct),
                rejected_correct=bool(rejected.correct), kind=kind)


def _distinct(a: Turn, b: Turn, task: Task) -> bool:
    """The two sides differ: an answer on the chosen side, not equivalent to the rejected side's."""
    return (a.answer is not None and not task.is_equivalent(a.answer, b.answer)
            and not task.is_equivalent(b.answer, a.answer) and a.response != b.response)


def turn_pair(t: Transcript, r: int, n: int, label: str | None, task: Task, rng) -> Pair | None:
    """The pair of agent ``n``'s round-``r`` turn of ``t`` (see the module doc), or None."""
    if label is None:
        return None
    turn = t.rounds[r][n]
    peers = [p for i, p in enumerate(t.rounds[r]) if i != n]  # the other agents' round-r turns
    if agrees(turn, label, task):
        own = [rnd[n] for k, rnd in enumerate(t.rounds) if k != r and not agrees(rnd[n], label, task)]
        own = [o for o in own if _distinct(turn, o, task)]
        if own:
            return _pair(turn, turn, rng.choice(own), t, SELF)
        others = [p for p in peers if not agrees(p, label, task) and _distinct(turn, p, task)]
        return _pair(turn, turn, rng.choice(others), t, PEER_REJECTED) if others else None
    better = [p for p in peers if agrees(p, label, task) and _distinct(p, turn, task)]
    return _pair(turn, rng.choice(better), turn, t, PEER_CHOSEN) if better else None


def _finish(name: str, candidates: list[Pair], seed: int, max_pairs: int | None, skipped: int) -> PairSet:
    kept, removed, dropped = dedupe_and_cap(candidates, max_pairs, _rng(seed, name, "pairs_cap"))
    return PairSet(name=name, pairs=kept, duplicates_removed=removed, dropped_by_cap=dropped, skipped_no_majority=skipped)


def build_pairs(transcripts: Sequence[Transcript], agent: int, task: Task, rounds: str, *, seed: int = 0,
                name: str | None = None, max_pairs: int | None = None, min_agreement: float | None = 0.5,
                labels: Sequence[str | None] | None = None) -> PairSet:
    """Agent ``agent``'s pairs from its turns of ``rounds``: ``"first"`` (a generator with critics), ``"last"`` (a
    critic; debates of one round give none) or ``"all"`` (a generator without critics)."""
    if rounds not in ("first", "last", "all"):
        raise ValueError(f"rounds must be 'first', 'last' or 'all', got {rounds!r}")
    name = name or f"{'critic' if rounds == 'last' else 'generator'}_{agent}"
    labels = problem_labels(transcripts, task, min_agreement) if labels is None else labels
    rng = _rng(seed, name, "pairs")
    candidates = []
    for t, label in zip(transcripts, labels):
        spoken = {"first": [0], "last": [len(t.rounds) - 1] if len(t.rounds) > 1 else [],
                  "all": range(len(t.rounds))}[rounds]
        for r in spoken:
            pair = turn_pair(t, r, agent, label, task, rng)
            if pair is not None:
                candidates.append(pair)
    return _finish(name, candidates, seed, max_pairs, skipped=sum(label is None for label in labels))


def build_society_pairs(transcripts: Sequence[Transcript], task: Task, num_agents: int, *, seed: int = 0,
                        critics: bool = True, max_pairs: int | None = None,
                        min_agreement: float | None = 0.5) -> dict[str, PairSet]:
    """The pairs of all 2N models (N generators without critics), named as the sets are."""
    labels = problem_labels(transcripts, task, min_agreement)
    out = {f"generator_{n}": build_pairs(transcripts, n, task, "first" if critics else "all", seed=seed,
                                         max_pairs=max_pairs, labels=labels) for n in range(num_agents)}
    if critics:
        out.update({f"critic_{n}": build_pairs(transcripts, n, task, "last", seed=seed, max_pairs=max_pairs,
                                               labels=labels) for n in range(num_agents)})
    return out


def merge_pairs(parts: Iterable[PairSet], name: str, *, seed: int = 0, max_pairs: int | None = None) -> PairSet:
    """All the parts in one (a shared model): concatenated in order, deduplicated, optionally capped."""
    parts = list(parts)
    merged = _finish(name, [p for s in parts for p in s.pairs], seed, max_pairs,
                     skipped=max((s.skipped_no_majority for s in parts), default=0))
    merged.duplicates_removed += sum(s.duplicates_removed for s in parts)
    merged.dropped_by_cap += sum(s.dropped_by_cap for s in parts)
    return merged
