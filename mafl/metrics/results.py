"""``results.json``: everything a run measured, in one file at the root of its run folder.

Schema::

    {
      "config": {...},                 # the resolved config
      "method": "multiagent_ft", "dataset": "gsm8k", "model": "tiny", "seed": 0,   # model of a mixed society
                                       # (society.models): its agents' bases, "tiny+tiny_s1+tiny"
      "records": [MetricRecord, ...],  # see mafl.metrics.iteration for the metric names
      "finetune": {"1": {"sets": {<model>: set report}, "models": {<model>: fine-tuning result}}, ...},
      "timings": {"0": {"eval_debate": s, "metrics": s}, "1": {"train_debate": s, "sets": s, "finetune": s,
                  "finetune/<model>": s, ..., "eval_debate": s, "metrics": s}, ...}   # wall seconds per stage
      "unavailable": {<metric>: why it could not be measured},  # e.g. KL and NLL on a server without logprobs
      "model_weights": sha256 | null   # the base weights where mafl built them (the tiny model), else null;
                                       # a mixed society's agent by agent, joined with "+" (mafl.model_weights)
    }

The file is written atomically (temp file + ``os.replace``), so a reader never sees half a file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mafl.metrics.stats import MetricRecord
from mafl.rundir import atomic_write_json

RESULTS_FILE = "results.json"


@dataclass
class Results:
    config: dict[str, Any]
    method: str
    dataset: str
    model: str
    records: list[MetricRecord] = field(default_factory=list)
    finetune: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, dict] = field(default_factory=dict)
    seed: int | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> why it could not be measured
    model_weights: str | None = None  # sha256 of the base weights mafl built (the tiny model); None otherwise
    path: Path | None = None  # the file it was read from (not saved)

    @classmethod
    def from_config(cls, config: dict[str, Any], records: Iterable[MetricRecord] = (),
                    finetune: dict[str, dict] | None = None, timings: dict[str, dict] | None = None,
                    unavailable: dict[str, str] | None = None, model_weights: str | None = None) -> "Results":
        """Method, dataset, model and seed named by the resolved config (``method.name``, ``dataset.name``, ...)."""
        name = lambda group: str((config.get(group) or {}).get("name", "?"))  # noqa: E731
        method = config.get("method") or {}
        label = str(method.get("label") or method.get("name", "?"))
        if (config.get("dataset") or {}).get("protocol") == "official":
            label += " [official protocol]"  # fine-tuned on debates of the eval problems: not comparable
        if (config.get("dataset") or {}).get("split") == "dev":
            label += " [dev split]"  # measured on the dev problems (choosing settings), not the eval problems
        label += reward_mark(finetune or {})
        from mafl.debate.society_models import agent_bases

        bases = agent_bases(config)  # a mixed society: its bases, agent by agent
        model = "+".join(bases) if bases else name("model")
        return cls(config=config, method=label, dataset=name("dataset"), model=model,
                   records=list(records), finetune=dict(finetune or {}), timings=dict(timings or {}),
                   seed=config.get("seed"), unavailable=dict(unavailable or {}), model_weights=model_weights)

    def to_json(self) -> dict:
        return {
            "config": self.config, "method": self.method, "dataset": self.dataset, "model": self.model,
            "seed": self.seed, "records": [r.to_json() for r in self.records], "finetune": self.finetune,
            "timings": self.timings, "unavailable": self.unavailable, "model_weights": self.model_weights,
        }

    @classmethod
    def from_json(cls, d: dict, path: Path | None = None) -> "Results":
        return cls(
            config=d.get("config") or {}, method=str(d.get("method", "?")), dataset=str(d.get("dataset", "?")),
            model=str(d.get("model", "?")), records=[MetricRecord.from_json(r) for r in d.get("records", [])],
            finetune=d.get("finetune") or {}, timings=d.get("timings") or {}, seed=d.get("seed"),
            unavailable=d.get("unavailable") or {}, model_weights=d.get("model_weights"), path=path,
        )

    def select(self, metric: str, split: str = "eval", agent: int | None = None) -> list[MetricRecord]:
        """The records of one metric (society-level by default), by iteration."""
        return sorted((r for r in self.records if r.is_of(metric, split, agent)), key=lambda r: r.iteration)


def reward_mark(finetune: dict) -> str:
    """A GRPO run's mark in its label, from its fine-tunes' records: a reward that reads the gold answer says so
    (``[gold reward: reads ground truth]``), another reward than the society's majority is named; "" otherwise."""
    grpo = [m for it in finetune.values() for m in ((it or {}).get("models") or {}).values()
            if m.get("objective") == "grpo"]
    if not grpo:
        return ""
    reward = grpo[0].get("reward") or "majority"
    if any(m.get("reads_gold") for m in grpo):
        return f" [{reward} reward: reads ground truth]"
    return "" if reward == "majority" else f" [{reward} reward]"


def write_results(run_dir: str | Path, results: Results) -> Path:
    """Write ``<run_dir>/results.json`` atomically; returns its path."""
    return atomic_write_json(Path(run_dir) / RESULTS_FILE, results.to_json(), strict=True)


def find_results(paths: Iterable[str | Path], named: set | None = None) -> list[Path]:
    """The results files named by ``paths``: a results file, a run folder, or a sweep folder (searched
    recursively). Raises FileNotFoundError for a path that holds none. ``named`` collects the files given by name
    (not found in a folder)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
            if named is not None:
                named.add(p.resolve())
        elif p.is_dir():
            files = sorted(p.rglob(RESULTS_FILE))
            if not files:
                raise FileNotFoundError(
                    f"no {RESULTS_FILE} under {p}: not a mafl run or sweep folder, or no run has finished "
                    f"measuring an iteration yet")
            found.extend(files)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return list(dict.fromkeys(f.resolve() for f in found))


def read_results(f: Path) -> Results:
    """One results file; a ValueError (one line) for a file that is not mafl's: not JSON, or without the method,
    dataset and metric records a mafl run writes (another tool's ``results.json``)."""
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{f} is not a mafl results file: not JSON ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(d, dict) or not isinstance(d.get("records"), list) or not {"method", "dataset"} <= set(d):
        keys = ", ".join(list(d)[:6]) if isinstance(d, dict) else f"a JSON {type(d).__name__}"
        raise ValueError(f"{f} is not a mafl results file (it holds {keys or 'nothing'}; a mafl run's has method, "
                         "dataset and records)")
    try:
        return Results.from_json(d, path=f)
    except (TypeError, KeyError, AttributeError, ValueError) as e:
        raise ValueError(f"{f} is not a mafl results file: {type(e).__name__}: {e}") from None


def load_results(paths: str | Path | Iterable[str | Path], skipped: list | None = None) -> list[Results]:
    """Every results file under ``paths`` (see :func:`find_results`), in path order. A file given by name that is
    not mafl's raises ValueError; one found in a folder is left out (its reason appended to ``skipped``, when
    given), unless it leaves nothing."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    named: set = set()
    out, passed = [], []
    for f in find_results(paths, named):
        try:
            out.append(read_results(f))
        except ValueError as e:
            if f in named:
                raise
            passed.append(str(e))
    if passed and not out:
        raise ValueError(passed[0] + (f" (and {len(passed) - 1} more)" if len(passed) > 1 else ""))
    if skipped is not None:
        skipped.extend(passed)
    return out
