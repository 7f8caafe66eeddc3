"""Fine-tuning sets cut from debate transcripts: one set per model of the society.

Selection uses the debate's own majority (``transcript.final_answer``), never the gold answer; ``turn.correct``
is carried along for analysis only. For a society of N agents and R rounds:

* ``generator_n``: agent n's round-1 turns (``rounds[0][n]``) whose answer is equivalent to the majority.
* ``critic_n`` (R >= 2): agent n's final-round turns (``rounds[-1][n]``) whose answer is equivalent to the
  majority, split into D- (its round-1 answer was not: wrong-to-right) and D+ (it already agreed), then mixed
  (see :func:`mix_critic`).
* Without critics (the generator speaks every round), ``generator_n`` gets its majority-agreeing turns of every
  round.

A transcript whose majority is None gives no examples. Exact duplicates (same prompt messages and response) are
removed and counted. Every random choice (critic mixing, the ``max_examples`` cap) is drawn from
``random.Random(f"{seed}/{name}/{purpose}")``, so it is deterministic by seed and differs between models; chosen
examples keep their transcript order.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from mafl.debate.transcript import Transcript, Turn
from mafl.rundir import atomic_write_json, atomic_write_jsonl, read_jsonl
from mafl.tasks.base import Task

GENERATOR, D_MINUS, D_PLUS = "generator", "d_minus", "d_plus"


@dataclass(frozen=True)
class Example:
    """One training example: the prompt messages exactly as the turn was given them, and its response."""

    prompt: tuple[dict, ...] | list[dict]
    response: str
    problem_id: str
    correct: bool  # the response's answer against the gold answer (analysis only, never used for selection)
    kind: str = GENERATOR  # generator | d_minus | d_plus

    @property
    def key(self) -> str:
        return json.dumps([list(self.prompt), self.response], sort_keys=True, ensure_ascii=False)

    def to_json(self) -> dict:
        return {
            "prompt": [dict(m) for m in self.prompt],
            "completion": [{"role": "assistant", "content": self.response}],
            "problem_id": self.problem_id,
            "correct": self.correct,
            "kind": self.kind,
        }

    @classmethod
    def from_json(cls, d: dict) -> "Example":
        return cls(
            prompt=[dict(m) for m in d["prompt"]],
            response=d["completion"][0]["content"],
            problem_id=str(d.get("problem_id", "")),
            correct=bool(d.get("correct", False)),
            kind=d.get("kind", GENERATOR),
        )


@dataclass
class FinetuneSet:
    """The examples of one model (``name`` is its adapter name, e.g. ``critic_1``) and how they were chosen."""

    name: str
    examples: list[Example] = field(default_factory=list)
    duplicates_removed: int = 0
    dropped_by_cap: int = 0

    def __len__(self) -> int:
        return len(self.examples)

    def records(self) -> list[dict]:
        """The conversational prompt-completion records trl's SFTTrainer reads."""
        return [{k: v for k, v in e.to_json().items() if k in ("prompt", "completion")} for e in self.examples]

    def report(self) -> dict:
        n = len(self.examples)
        chars = [len(e.response) for e in self.examples]
        words = [len(e.response.split()) for e in self.examples]
        rep = {
            "name": self.name,
            "size": n,
            "accuracy": (sum(e.correct for e in self.examples) / n) if n else None,
            "duplicates_removed": self.duplicates_removed,
            "dropped_by_cap": self.dropped_by_cap,
            "mean_response_chars": (sum(chars) / n) if n else 0.0,
            "mean_response_tokens": (sum(words) / n) if n else 0.0,
        }
        if self.name.startswith("critic"):
            rep["d_minus"] = sum(e.kind == D_MINUS for e in self.examples)
            rep["d_plus"] = sum(e.kind == D_PLUS for e in self.examples)
        return rep

    def save(self, path: str | os.PathLike) -> Path:
        """Write the examples as JSONL and the report next to it (``<stem>.report.json``), each atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"duplicates_removed": self.duplicates_removed, "dropped_by_cap": self.dropped_by_cap}
        atomic_write_json(report_path(path), {**self.report(), **meta})
        atomic_write_jsonl(path, (e.to_json() for e in self.examples))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, name: str | None = None) -> "FinetuneSet":
        path = Path(path)
        examples = [Example.from_json(row) for row in read_jsonl(path)]
        meta = json.loads(report_path(path).read_text()) if report_path(path).exists() else {}
        return cls(
            name=name or meta.get("name") or path.stem,
            examples=examples,
            duplicates_removed=int(meta.get("duplicates_removed", 0)),
            dropped_by_cap=int(meta.get("dropped_by_cap", 0)),
        )


def report_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".report.json")


def _rng(seed: int, name: str, purpose: str) -> random.Random:
    return random.Random(f"{seed}/{name}/{purpose}")


def _sample(items: list, k: int, rng: random.Random) -> list:
    """``k`` items chosen by ``rng``, kept in their original order."""
    if k >= len(items):
        return list(items)
    keep = sorted(rng.sample(range(len(items)), max(k, 0)))
    return [items[i] for i in keep]


def dedupe(examples: Iterable[Example]) -> tuple[list[Example], int]:
    """Drop exact duplicates (same prompt messages and response), keeping the first; returns (kept, removed)."""
    seen: set[str] = set()
    kept: list[Example] = []
    removed = 0
    for e in examples:
        if e.key in seen:
            removed += 1
        else:
            seen.add(e.key)
            kept.append(e)
    return kept, removed


def agrees(turn: Turn, final_answer: str | None, task: Task) -> bool:
    """True when the turn's answer is equivalent to the debate's majority (a None majority agrees with nothing)."""
    return final_answer is not None and task.is_equivalent(turn.answer, final_answer)


def _example(turn: Turn, t: Transcript, kind: str) -> Example:
    return Example(prompt=[dict(m) for m in turn.messages], response=turn.response, problem_id=t.problem.id,
                   correct=bool(turn.correct), kind=kind)


def critic_mix_sizes(num_d_minus: int, num_d_plus: int, critic_w: float | None) -> tuple[int, int]:
    """How many D- and D+ examples a critic's set takes from the available ones.

    * ``critic_w=None`` (the official code): every D- example plus ``num_d_minus // 2`` D+ examples (fewer if
      there are not that many).
    * ``critic_w=w``: D- makes up the fraction ``w`` of the set. The side that is scarcer for that fraction is kept
      whole and the other is cut to ``round(...)``: with ``a`` D- and ``b`` D+, if ``a * (1 - w) / w <= b`` all D- are
      kept with ``round(a * (1 - w) / w)`` D+, otherwise all D+ are kept with ``round(b * w / (1 - w))`` D-.
      ``w=1`` takes only D-, ``w=0`` only D+; with no D- (and 0 < w < 1) the set is empty.
    """
    a, b = num_d_minus, num_d_plus
    if critic_w is None:
        return a, min(b, a // 2)
    w = float(critic_w)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"critic_w must be in [0, 1] or null, got {critic_w}")
    if w == 1.0:
        return a, 0
    if w == 0.0:
        return 0, b
    need_plus = a * (1.0 - w) / w
    if need_plus <= b:
        return a, min(b, round(need_plus))
    return min(a, round(b * w / (1.0 - w))), b


def _finish(name: str, candidates: list[Example], seed: int, max_examples: int | None,
            critic_w: float | None = None, critic: bool = False) -> FinetuneSet:
    """Dedupe, mix (critics), cap; chosen examples keep their transcript order."""
    kept, removed = dedupe(candidates)
    order = {e.key: i for i, e in enumerate(kept)}
    if critic:
        d_minus = [e for e in kept if e.kind == D_MINUS]
        d_plus = [e for e in kept if e.kind == D_PLUS]
        k_minus, k_plus = critic_mix_sizes(len(d_minus), len(d_plus), critic_w)
        kept = _sample(d_minus, k_minus, _rng(seed, name, D_MINUS)) + _sample(d_plus, k_plus, _rng(seed, name, D_PLUS))
        kept.sort(key=lambda e: order[e.key])
    dropped = 0
    if max_examples is not None and len(kept) > max_examples:
        dropped = len(kept) - max(max_examples, 0)
        kept = _sample(kept, max_examples, _rng(seed, name, "cap"))
    return FinetuneSet(name=name, examples=kept, duplicates_removed=removed, dropped_by_cap=dropped)


def build_generator_set(transcripts: Sequence[Transcript], agent: int, task: Task, *, seed: int = 0,
                        max_examples: int | None = None, rounds: str = "first",
                        name: str | None = None) -> FinetuneSet:
    """Agent ``agent``'s majority-agreeing turns of round 1 (``rounds="first"``) or of every round
    (``rounds="all"``: the without-critics ablation, where the generator speaks every round)."""
    if rounds not in ("first", "all"):
        raise ValueError(f"rounds must be 'first' or 'all', got {rounds!r}")
    candidates = []
    for t in transcripts:
        spoken = t.rounds[:1] if rounds == "first" else t.rounds
        for rnd in spoken:
            turn = rnd[agent]
            if agrees(turn, t.final_answer, task):
                candidates.append(_example(turn, t, GENERATOR))
    return _finish(name or f"generator_{agent}", candidates, seed, max_examples)


def build_critic_set(transcripts: Sequence[Transcript], agent: int, task: Task, critic_w: float | None,
                     seed: int = 0, *, max_examples: int | None = None, name: str | None = None) -> FinetuneSet:
    """Agent ``agent``'s majority-agreeing final-round turns, D- and D+ mixed by ``critic_w``
    (:func:`critic_mix_sizes`). Debates of a single round give no critic examples."""
    candidates = []
    for t in transcripts:
        if len(t.rounds) < 2:
            continue
        turn = t.rounds[-1][agent]
        if agrees(turn, t.final_answer, task):
            kind = D_PLUS if agrees(t.rounds[0][agent], t.final_answer, task) else D_MINUS
            candidates.append(_example(turn, t, kind))
    return _finish(name or f"critic_{agent}", candidates, seed, max_examples, critic_w, critic=True)


def build_society_sets(transcripts: Sequence[Transcript], task: Task, num_agents: int, critic_w: float | None,
                       seed: int = 0, critics: bool = True, max_examples: int | None = None
                       ) -> dict[str, FinetuneSet]:
    """The sets of all 2N models (``generator_0``.., ``critic_0``..), or of the N generators when
    ``critics=False`` (each then gets its majority-agreeing turns of every round)."""
    sets = {}
    for n in range(num_agents):
        sets[f"generator_{n}"] = build_generator_set(
            transcripts, n, task, seed=seed, max_examples=max_examples, rounds="first" if critics else "all")
    if critics:
        for n in range(num_agents):
            sets[f"critic_{n}"] = build_critic_set(transcripts, n, task, critic_w, seed, max_examples=max_examples)
    return sets


def merge_sets(sets: Iterable[FinetuneSet], name: str = "single", *, seed: int = 0,
               max_examples: int | None = None) -> FinetuneSet:
    """All the sets in one (the single-model ablation): concatenated in order, deduplicated, optionally capped.
    ``duplicates_removed`` adds the parts' own removals to those found across parts."""
    sets = list(sets)
    merged = _finish(name, [e for s in sets for e in s.examples], seed, max_examples)
    merged.duplicates_removed += sum(s.duplicates_removed for s in sets)
    merged.dropped_by_cap += sum(s.dropped_by_cap for s in sets)
    return merged
