"""Mixing a model's fine-tuning set with general instruction data (AgentTuning, Zeng et al. 2023).

``finetune.mix_general: {path: general.jsonl, eta: 0.2}``: each model's set is topped up with rows of a local JSONL
file so that its own examples make up the share ``eta`` of the mixed set (AgentTuning's eta: the weight of the
task data against general data, 0.2 in their best mix): a set of ``n`` examples gets ``round(n * (1 - eta) / eta)``
general rows (all of them when the file holds fewer). ``eta=1`` adds nothing. The rows are drawn by
``random.Random(f"{seed}/{set name}/general")``: deterministic by seed, different between models.

Rows are ``{"question": ..., "answer": ...}`` or ``{"prompt": ..., "completion": ...}``, where prompt and
completion are either strings or chat messages (``[{"role": ..., "content": ...}]``). General examples are kept
in the saved set with ``kind="general"``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from mafl.finetune.sets import Example, FinetuneSet
from mafl.rundir import iter_jsonl

GENERAL = "general"


@dataclass(frozen=True)
class MixSettings:
    path: Path
    eta: float

    @classmethod
    def from_cfg(cls, c: Mapping | None, key: str = "finetune.mix_general") -> "MixSettings | None":
        """None when mixing is off; a ConfigError naming the key for a missing file or an eta outside (0, 1]."""
        from mafl.errors import ConfigError

        if not c:
            return None
        path = Path(str(c.get("path") or "")).expanduser()
        if not c.get("path") or not path.is_file():
            raise ConfigError(f"{key}.path: no such file {c.get('path')!r} (a JSONL file of general rows)")
        eta = c.get("eta")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 < eta <= 1.0:
            raise ConfigError(f"{key}.eta: must be a number in (0, 1] (got {eta!r})")
        return cls(path=path, eta=float(eta))


def _messages(value, role: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m and "content" in m
                                                 for m in value):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    raise ValueError(f"not a string or a list of chat messages: {str(value)[:80]!r}")


def general_example(row: dict, id: str) -> Example:
    """One general row as a training example (question/answer or prompt/completion)."""
    if "question" in row and "answer" in row:
        prompt, completion = _messages(row["question"], "user"), _messages(row["answer"], "assistant")
    elif "prompt" in row and "completion" in row:
        prompt, completion = _messages(row["prompt"], "user"), _messages(row["completion"], "assistant")
    else:
        raise ValueError("needs question/answer or prompt/completion fields")
    response = "".join(m["content"] for m in completion)
    return Example(prompt=prompt, response=response, problem_id=id, correct=False, kind=GENERAL)


def load_general(path: str | Path) -> list[Example]:
    """Every row of the general JSONL file; a malformed row raises ValueError naming its line."""
    out = []
    for lineno, row in iter_jsonl(path):
        try:
            out.append(general_example(row, id=f"general/{lineno}"))
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
    return out


def general_count(own: int, eta: float) -> int:
    """How many general rows a set of ``own`` examples gets so that they make up the share ``eta``."""
    return round(own * (1.0 - eta) / eta)


def mix_general(s: FinetuneSet, general: Sequence[Example], eta: float, seed: int) -> FinetuneSet:
    """``s`` followed by ``general_count(len(s), eta)`` rows of ``general`` (fewer if it has fewer) drawn by seed."""
    k = min(len(general), general_count(len(s), eta))
    rng = random.Random(f"{seed}/{s.name}/{GENERAL}")
    keep = sorted(rng.sample(range(len(general)), k))
    return FinetuneSet(name=s.name, examples=list(s.examples) + [general[i] for i in keep],
                       duplicates_removed=s.duplicates_removed, dropped_by_cap=s.dropped_by_cap)
