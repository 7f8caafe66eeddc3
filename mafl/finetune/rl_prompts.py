"""The prompts of GRPO fine-tuning (``finetune.objective: grpo``), cut from debate transcripts: for each model of
the society, the contexts it answered in during the iteration's train debate. The completions are not taken from the
debate: the model being trained samples them fresh (:mod:`mafl.finetune.grpo`) and a reward scores them
(:mod:`mafl.finetune.rewards`).

A model's turns are those its SFT set takes from (:mod:`mafl.finetune.sets`): ``generator_n`` gets agent n's round-1
prompts (every round's without critics), ``critic_n`` agent n's final-round contexts, exactly as it answered in them
(its own conversation with the others' answers or their summary). Each prompt carries its ``target``, the answer the
reward compares to: for a reward that does not read the gold answer, the problem's label (its strict-majority answer
in the debate, ``finetune.min_agreement``), and a problem without one gives no prompts; for ``gold`` (RLVR), the gold
answer, and every problem gives prompts. A critic's prompt also says whether its own round-1 answer agreed with the
label (``earlier_agreed``; the ``correction`` reward's D- bonus). ``target_correct`` (the target against the gold
answer) is for analysis only, never given to the trainer.

Exact duplicates (same prompt messages) are removed and counted; ``max_prompts`` caps a model's prompts (dropped by
``random.Random(f"{seed}/{name}/prompts_cap")``, as the sets draw their caps).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from mafl.debate.transcript import Transcript
from mafl.finetune.labels import (_rng, agrees, checked_rows, dedupe_and_cap, problem_labels, read_report,
                                  save_with_report, selection_counts)
from mafl.finetune.rewards import get_reward
from mafl.rundir import read_jsonl
from mafl.tasks.base import Task

SUFFIX = ".prompts.jsonl"  # a model's prompts beside its set: iter_k/sets/<model>.prompts.jsonl
TRAINED_FIELDS = ("prompt", "target", "earlier_agreed")  # what the trainer (and the reward) is given of a prompt


@dataclass(frozen=True)
class RLPrompt:
    """One prompt: the messages exactly as the model's turn was given them, and what its reward compares to."""

    prompt: tuple[dict, ...] | list[dict]
    problem_id: str
    target: str
    earlier_agreed: bool | None = None  # a critic's: its own round-1 answer agreed with the label (None: a generator)
    target_correct: bool = False  # analysis only: the target is the gold answer

    @property
    def key(self) -> str:
        return json.dumps(list(self.prompt), sort_keys=True, ensure_ascii=False)

    def to_json(self) -> dict:
        return {"prompt": [dict(m) for m in self.prompt], "problem_id": self.problem_id, "target": self.target,
                "earlier_agreed": self.earlier_agreed, "target_correct": self.target_correct}

    def trained(self) -> dict:
        """The row the trainer reads: the prompt and the reward's inputs, nothing for analysis."""
        return {k: v for k, v in self.to_json().items() if k in TRAINED_FIELDS}

    @classmethod
    def from_json(cls, d: dict) -> "RLPrompt":
        return cls(prompt=[dict(m) for m in d["prompt"]], problem_id=str(d.get("problem_id", "")),
                   target=str(d["target"]), earlier_agreed=d.get("earlier_agreed"),
                   target_correct=bool(d.get("target_correct", False)))


@dataclass
class PromptSet:
    """The GRPO prompts of one model (``name``: its adapter name), the reward they are for, how they were chosen."""

    name: str
    reward: str
    prompts: list[RLPrompt] = field(default_factory=list)
    duplicates_removed: int = 0
    dropped_by_cap: int = 0
    skipped_no_majority: int = 0

    def __len__(self) -> int:
        return len(self.prompts)

    def records(self) -> list[dict]:
        return [p.trained() for p in self.prompts]

    def report(self) -> dict:
        n = len(self.prompts)
        critic = [p for p in self.prompts if p.earlier_agreed is not None]
        return {
            "name": self.name,
            "prompts": n,
            "reward": self.reward,
            "reads_gold": get_reward(self.reward).reads_gold,
            "target_accuracy": sum(p.target_correct for p in self.prompts) / n if n else None,
            "earlier_disagreed": sum(p.earlier_agreed is False for p in critic),  # a critic's D- prompts
            "duplicates_removed": self.duplicates_removed,
            "dropped_by_cap": self.dropped_by_cap,
            "skipped_no_majority": self.skipped_no_majority,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """The prompts as JSONL and the report beside them (``<model>.prompts.report.json``), each atomically."""
        return save_with_report(path, self.report(), (p.to_json() for p in self.prompts))

    @classmethod
    def load(cls, path: str | os.PathLike, name: str | None = None) -> "PromptSet":
        path = Path(path)
        meta = read_report(path)
        return cls(name=name or meta.get("name") or path.name.removesuffix(SUFFIX),
                   reward=meta.get("reward", "majority"),
                   prompts=checked_rows(path, [RLPrompt.from_json(row) for row in read_jsonl(path)], meta, "prompts"),
                   **selection_counts(meta))


def prompts_path(sets_dir: str | os.PathLike, model: str) -> Path:
    return Path(sets_dir) / f"{model}{SUFFIX}"


def _finish(name: str, reward: str, candidates: list[RLPrompt], seed: int, max_prompts: int | None,
            skipped: int) -> PromptSet:
    kept, removed, dropped = dedupe_and_cap(candidates, max_prompts, _rng(seed, name, "prompts_cap"))
    return PromptSet(name=name, reward=reward, prompts=kept, duplicates_removed=removed, dropped_by_cap=dropped,
                     skipped_no_majority=skipped)


def build_prompts(transcripts: Sequence[Transcript], agent: int, task: Task, rounds: str, reward: str, *,
                  seed: int = 0, name: str | None = None, max_prompts: int | None = None,
                  min_agreement: float | None = 0.5, labels: Sequence[str | None] | None = None) -> PromptSet:
    """Agent ``agent``'s prompts from its turns of ``rounds``: ``"first"`` (a generator with critics), ``"last"``
    (a critic; debates of one round give none) or ``"all"`` (a generator without critics), for ``reward``."""
    if rounds not in ("first", "last", "all"):
        raise ValueError(f"rounds must be 'first', 'last' or 'all', got {rounds!r}")
    name = name or f"{'critic' if rounds == 'last' else 'generator'}_{agent}"
    labels = problem_labels(transcripts, task, min_agreement) if labels is None else labels
    reads_gold = get_reward(reward).reads_gold
    candidates = []
    for t, label in zip(transcripts, labels):
        target = t.problem.answer if reads_gold else label
        if target is None:
            continue
        spoken = {"first": [0], "last": [len(t.rounds) - 1] if len(t.rounds) > 1 else [],
                  "all": range(len(t.rounds))}[rounds]
        for r in spoken:
            earlier = agrees(t.rounds[0][agent], label, task) if rounds == "last" and label is not None else None
            candidates.append(RLPrompt(prompt=[dict(m) for m in t.rounds[r][agent].messages], problem_id=t.problem.id,
                                       target=target, earlier_agreed=earlier,
                                       target_correct=task.is_equivalent(target, t.problem.answer)))
    return _finish(name, reward, candidates, seed, max_prompts,
                   skipped=0 if reads_gold else sum(label is None for label in labels))


def build_society_prompts(transcripts: Sequence[Transcript], task: Task, num_agents: int, reward: str, *,
                          seed: int = 0, critics: bool = True, max_prompts: int | None = None,
                          min_agreement: float | None = 0.5) -> dict[str, PromptSet]:
    """The prompts of all 2N models (N generators without critics), named as the sets are."""
    labels = problem_labels(transcripts, task, min_agreement)
    common = dict(seed=seed, max_prompts=max_prompts, labels=labels)
    out = {f"generator_{n}": build_prompts(transcripts, n, task, "first" if critics else "all", reward, **common)
           for n in range(num_agents)}
    if critics:
        out.update({f"critic_{n}": build_prompts(transcripts, n, task, "last", reward, **common)
                    for n in range(num_agents)})
    return out


def merge_prompts(parts: Iterable[PromptSet], name: str, *, seed: int = 0, max_prompts: int | None = None) -> PromptSet:
    """All the parts in one (a shared model): concatenated in order, deduplicated, optionally capped."""
    parts = list(parts)
    reward = parts[0].reward if parts else "majority"
    merged = _finish(name, reward, [p for s in parts for p in s.prompts], seed, max_prompts,
                     skipped=max((s.skipped_no_majority for s in parts), default=0))
    merged.duplicates_removed += sum(s.duplicates_removed for s in parts)
    merged.dropped_by_cap += sum(s.dropped_by_cap for s in parts)
    return merged
