"""Fine-tuning sets cut from debate transcripts: one set per model of the society.

Selection uses the debate's own answers, never the gold answer; ``turn.correct`` is carried along for analysis
only. A problem's *label* is its final-round answer when that answer is held by more than ``min_agreement`` of
the agents (default 0.5: a strict majority, so a 1-1-1 split labels nothing and no agent is favoured);
``min_agreement=None`` is the public code's rule (:func:`mafl.tasks.vote.public_consensus`: the largest cluster
of the answers read, a tie going to the largest answer string). Problems without a label give no examples and
are counted (``skipped_no_majority``). For a society of N agents and R rounds:

* ``generator_n``: agent n's round-1 turns (``rounds[0][n]``) whose answer is equivalent to the label; the
  example is its round-1 prompt and answer.
* ``critic_n`` (R >= 2): agent n's final-round turns (``rounds[-1][n]``) whose answer is equivalent to the label,
  split into D- (its round-1 answer was not: wrong-to-right) and D+ (it already agreed), then mixed
  (see :func:`critic_mix_sizes`). The example is exactly the context the critic answered in (with
  ``debate.context=conversation``: its own earlier turns, then the others' answers or their summary) with the
  loss on its final response only.
* Without critics (the generator speaks every round), ``generator_n`` gets its label-agreeing turns of every
  round.

A turn cut off by ``max_new_tokens`` has no answer, so it never agrees and never becomes a target. Exact
duplicates (same prompt messages and response) are removed and counted. Every random choice (critic mixing, the
``max_examples`` cap) is drawn from ``random.Random(f"{seed}/{name}/{purpose}")``, so it is deterministic by
seed and differs between models; chosen examples keep their transcript order.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from mafl.debate.transcript import Transcript, Turn
from mafl.finetune.labels import (
    _rng, _sample, agrees, checked_rows, dedupe, problem_label, problem_labels, read_report, save_with_report,
    selection_counts,
)
from mafl.rundir import read_jsonl
from mafl.tasks.base import Task

if TYPE_CHECKING:
    from mafl.finetune.pairs import PairSet
    from mafl.finetune.rl_prompts import PromptSet

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
    skipped_no_majority: int = 0  # problems that gave no examples: no answer held by enough agents
    # the same model's preference pairs from the same transcripts (finetune.objective dpo | sft+dpo), else None;
    # saved and loaded on their own (mafl.finetune.pairs)
    pairs: "PairSet | None" = None
    # the same model's GRPO prompts (finetune.objective grpo), else None; saved and loaded on their own
    # (mafl.finetune.rl_prompts)
    prompts: "PromptSet | None" = None

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
            "skipped_no_majority": self.skipped_no_majority,
            "mean_response_chars": (sum(chars) / n) if n else 0.0,
            "mean_response_tokens": (sum(words) / n) if n else 0.0,
        }
        if self.name.startswith("critic"):
            rep["d_minus"] = sum(e.kind == D_MINUS for e in self.examples)
            rep["d_plus"] = sum(e.kind == D_PLUS for e in self.examples)
        if self.pairs is not None:
            rep["pairs"] = self.pairs.report()
        if self.prompts is not None:
            rep["prompts"] = self.prompts.report()
        return rep

    def save(self, path: str | os.PathLike) -> Path:
        """Write the examples as JSONL and the report next to it (``<stem>.report.json``), each atomically."""
        return save_with_report(path, self.report(), (e.to_json() for e in self.examples))

    @classmethod
    def load(cls, path: str | os.PathLike, name: str | None = None) -> "FinetuneSet":
        path = Path(path)
        meta = read_report(path)
        examples = checked_rows(path, [Example.from_json(row) for row in read_jsonl(path)], meta, "size")
        return cls(
            name=name or meta.get("name") or path.stem,
            examples=examples,
            **selection_counts(meta),
        )


def _example(turn: Turn, t: Transcript, kind: str) -> Example:
    return Example(prompt=[dict(m) for m in turn.messages], response=turn.response, problem_id=t.problem.id,
                   correct=bool(turn.correct), kind=kind)


def critic_mix_sizes(num_d_minus: int, num_d_plus: int, critic_w: float) -> tuple[int, int]:
    """How many D- and D+ examples a critic's set takes from the available ones, for ``critic_w=w``.

    D- makes up the fraction ``w`` of the set. The side that is scarcer for that fraction is kept whole and the
    other is cut to ``round(...)``: with ``a`` D- and ``b`` D+, if ``a * (1 - w) / w <= b`` all D- are kept with
    ``round(a * (1 - w) / w)`` D+, otherwise all D+ are kept with ``round(b * w / (1 - w))`` D-. ``w=1`` takes
    only D-, ``w=0`` only D+; with no D- (and 0 < w < 1) the set is empty. ``critic_w=None`` (the public code's
    rule) is drawn per example: see :func:`public_critic_mix`.
    """
    a, b = num_d_minus, num_d_plus
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


def public_critic_mix(d_minus: list, d_plus: list, rng: random.Random) -> tuple[list, list]:
    """The public code's critic mix (``ft_critic.py``): every D- example; the D+ examples shuffled, and for the
    i-th D- example a fair coin adds the i-th D+ one (about half as many D+ as D-). Where the public code runs past
    the end of its D+ list (an IndexError whenever a coin comes up at an i with fewer D+ than that), mafl adds
    nothing instead."""
    plus = list(d_plus)
    rng.shuffle(plus)
    taken = [plus[i] for i in range(len(d_minus)) if rng.random() < 0.5 and i < len(plus)]
    return list(d_minus), taken


def _finish(name: str, candidates: list[Example], seed: int, max_examples: int | None,
            critic_w: float | None = None, critic: bool = False, skipped: int = 0) -> FinetuneSet:
    """Dedupe, mix (critics), cap; chosen examples keep their transcript order."""
    kept, removed = dedupe(candidates)
    order = {e.key: i for i, e in enumerate(kept)}
    if critic:
        d_minus = [e for e in kept if e.kind == D_MINUS]
        d_plus = [e for e in kept if e.kind == D_PLUS]
        if critic_w is None:
            chosen_minus, chosen_plus = public_critic_mix(d_minus, d_plus, _rng(seed, name, "public_mix"))
        else:
            k_minus, k_plus = critic_mix_sizes(len(d_minus), len(d_plus), critic_w)
            chosen_minus = _sample(d_minus, k_minus, _rng(seed, name, D_MINUS))
            chosen_plus = _sample(d_plus, k_plus, _rng(seed, name, D_PLUS))
        kept = sorted(chosen_minus + chosen_plus, key=lambda e: order[e.key])
    dropped = 0
    if max_examples is not None and len(kept) > max_examples:
        dropped = len(kept) - max(max_examples, 0)
        kept = _sample(kept, max_examples, _rng(seed, name, "cap"))
    return FinetuneSet(name=name, examples=kept, duplicates_removed=removed, dropped_by_cap=dropped,
                       skipped_no_majority=skipped)


def build_generator_set(transcripts: Sequence[Transcript], agent: int, task: Task, *, seed: int = 0,
                        max_examples: int | None = None, rounds: str = "first", name: str | None = None,
                        min_agreement: float | None = 0.5,
                        labels: Sequence[str | None] | None = None) -> FinetuneSet:
    """Agent ``agent``'s label-agreeing turns of round 1 (``rounds="first"``) or of every round
    (``rounds="all"``: the without-critics ablation, where the generator speaks every round). ``labels``: the
    transcripts' labels when already computed (else from ``min_agreement``)."""
    if rounds not in ("first", "all"):
        raise ValueError(f"rounds must be 'first' or 'all', got {rounds!r}")
    labels = problem_labels(transcripts, task, min_agreement) if labels is None else labels
    candidates = []
    for t, label in zip(transcripts, labels):
        spoken = t.rounds[:1] if rounds == "first" else t.rounds
        for rnd in spoken:
            turn = rnd[agent]
            if agrees(turn, label, task):
                candidates.append(_example(turn, t, GENERATOR))
    return _finish(name or f"generator_{agent}", candidates, seed, max_examples,
                   skipped=sum(label is None for label in labels))


def build_critic_set(transcripts: Sequence[Transcript], agent: int, task: Task, critic_w: float | None,
                     seed: int = 0, *, max_examples: int | None = None, name: str | None = None,
                     min_agreement: float | None = 0.5,
                     labels: Sequence[str | None] | None = None) -> FinetuneSet:
    """Agent ``agent``'s label-agreeing final-round turns, D- and D+ mixed by ``critic_w``
    (:func:`critic_mix_sizes`; None: :func:`public_critic_mix`). Debates of a single round give no critic
    examples."""
    labels = problem_labels(transcripts, task, min_agreement) if labels is None else labels
    candidates = []
    for t, label in zip(transcripts, labels):
        if len(t.rounds) < 2:
            continue
        turn = t.rounds[-1][agent]
        if agrees(turn, label, task):
            kind = D_PLUS if agrees(t.rounds[0][agent], label, task) else D_MINUS
            candidates.append(_example(turn, t, kind))
    return _finish(name or f"critic_{agent}", candidates, seed, max_examples, critic_w, critic=True,
                   skipped=sum(label is None for label in labels))


def build_society_sets(transcripts: Sequence[Transcript], task: Task, num_agents: int, critic_w: float | None,
                       seed: int = 0, critics: bool = True, max_examples: int | None = None,
                       min_agreement: float | None = 0.5) -> dict[str, FinetuneSet]:
    """The sets of all 2N models (``generator_0``.., ``critic_0``..), or of the N generators when
    ``critics=False`` (each then gets its label-agreeing turns of every round)."""
    labels = problem_labels(transcripts, task, min_agreement)
    sets = {}
    for n in range(num_agents):
        sets[f"generator_{n}"] = build_generator_set(
            transcripts, n, task, seed=seed, max_examples=max_examples, rounds="first" if critics else "all",
            labels=labels)
    if critics:
        for n in range(num_agents):
            sets[f"critic_{n}"] = build_critic_set(transcripts, n, task, critic_w, seed, max_examples=max_examples,
                                                   labels=labels)
    return sets


def merge_sets(sets: Iterable[FinetuneSet], name: str = "single", *, seed: int = 0,
               max_examples: int | None = None) -> FinetuneSet:
    """All the sets in one (the single-model ablation): concatenated in order, deduplicated, optionally capped.
    ``duplicates_removed`` adds the parts' own removals to those found across parts."""
    sets = list(sets)
    merged = _finish(name, [e for s in sets for e in s.examples], seed, max_examples,
                     skipped=max((s.skipped_no_majority for s in sets), default=0))
    merged.duplicates_removed += sum(s.duplicates_removed for s in sets)
    merged.dropped_by_cap += sum(s.dropped_by_cap for s in sets)
    return merged
