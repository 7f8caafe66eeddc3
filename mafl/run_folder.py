"""The run folder: the one place that knows its layout (every path, the stage markers, the wall time of every
stage, ``results.json``).

    config.yaml                      the resolved config
    society.json                     a mixed society: each agent's base and its path
    base_weights.json                the base weights' sha256 where mafl built them (the tiny model)
    iter_0/eval/transcripts.jsonl    the untuned society on the eval problems (+ chunks/ while it runs)
    iter_0/eval/metrics.json         (and unavailable.json: metrics that could not be measured, and why)
    iter_k/train/transcripts.jsonl   k >= 1: the society of iteration k-1 debating the train problems
    iter_k/sets/<model>.jsonl        each model's fine-tuning set, and report.json
    iter_k/models/<model>/           each model's fine-tuned weights (a LoRA adapter, or a whole model)
    iter_k/eval/...                  the fine-tuned society on the eval problems
    iter_k/timings.json              the wall time of every stage of iteration k (:meth:`RunFolder.timed`)
    .done/iter_k.sets                the stage markers (mafl/rundir.py)
    results.json                     every metric of every iteration

Every stage writes atomically and is skipped when its output is already there: the same command on the same
folder continues where a stopped run left off.
"""
from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Iterator

from mafl.rundir import Stages, atomic_write_json

ITERATION_FOLDER = "iter_{}"  # iteration k's folder: the one spelling of it
ITERATION = re.compile("^" + ITERATION_FOLDER.format(r"(\d+)") + "$")


class RunFolder:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.stages = Stages(self.root)
        self.timings: dict = {}  # {iteration: {stage: seconds}}
        self._timing: list = []  # the open stages: [start, seconds of nested stages]

    # -- paths -----------------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def society(self) -> Path:
        return self.root / "society.json"

    @property
    def base_weights(self) -> Path:
        return self.root / "base_weights.json"

    def check_base_weights(self, weights: str | None) -> None:
        """Record the weights the run starts from (``mafl.model_weights.base_weights``); refuse, with one line, to go
        on with other weights than it started from (the tiny model rebuilt on another kind of CPU)."""
        from mafl.errors import RunError
        from mafl.model_weights import short_weights

        if weights is None:
            return
        saved = json.loads(self.base_weights.read_text()).get("model_weights") if self.base_weights.exists() else None
        if saved is None:
            atomic_write_json(self.base_weights, {"model_weights": weights})
        elif saved != weights:
            raise RunError(f"{self.root} started from base weights {short_weights(saved)}, and this machine's are "
                           f"{short_weights(weights)} (the tiny model built on another kind of CPU): copy the model "
                           f"folder the run started from ($MAFL_HOME/tiny/<key>), or choose another run_dir")

    def iteration(self, k: int) -> Path:
        return self.root / ITERATION_FOLDER.format(k)

    def iterations(self) -> list[tuple[int, Path]]:
        """(k, folder) of every iteration folder there, in order."""
        if not self.root.is_dir():
            return []
        return sorted((int(m.group(1)), p) for p in self.root.iterdir() if (m := ITERATION.match(p.name)))

    def split(self, k: int, split: str) -> Path:
        """A debate's folder: ``train``, ``eval``, ``rationalize`` (star), ``reference_debate`` (majority)."""
        return self.iteration(k) / split

    def transcripts(self, k: int, split: str) -> Path:
        return self.split(k, split) / "transcripts.jsonl"

    def sets(self, k: int) -> Path:
        return self.iteration(k) / "sets"

    def models(self, k: int) -> Path:
        return self.iteration(k) / "models"

    def metrics(self, k: int, split: str) -> Path:
        return self.split(k, split) / "metrics.json"

    def unavailable(self, k: int, split: str) -> Path:
        """The metrics of a debate that could not be measured (a server without prompt log-probabilities)."""
        return self.split(k, split) / "unavailable.json"

    @staticmethod
    def stage(k: int, what: str) -> str:
        """The name of iteration ``k``'s stage ``what`` in a backend's usage ledger (``iter_1/train``)."""
        return f"{ITERATION_FOLDER.format(k)}/{what}"

    def holds_work(self) -> bool:
        """Whether anything has been computed here: any file but the saved config, Hydra's own records (``.hydra/``)
        and logs. A folder with only those (a run refused before any work) holds none; a debate chunk, a stage
        marker, ``results.json`` or the output of a command that keeps its work elsewhere in the folder (``mafl
        diagnose``'s ``debate/``) is work."""
        return any(path.is_file() and path != self.config and path.relative_to(self.root).parts[0] != ".hydra"
                   and path.suffix != ".log" for path in self.root.rglob("*"))

    # -- stage markers ---------------------------------------------------------------------------------------
    def sets_done(self, k: int) -> bool:
        return self.stages.done(f"{ITERATION_FOLDER.format(k)}.sets")

    def mark_sets_done(self, k: int) -> None:
        self.stages.mark(f"{ITERATION_FOLDER.format(k)}.sets")

    # -- wall time -------------------------------------------------------------------------------------------
    def iteration_timings(self, k: int) -> dict:
        key = str(k)
        if key not in self.timings:
            path = self.iteration(k) / "timings.json"
            self.timings[key] = json.loads(path.read_text()) if path.exists() else {}
        return self.timings[key]

    @contextlib.contextmanager
    def timed(self, k: int, stage: str) -> Iterator[None]:
        """Record the wall time of the block as ``stage`` of iteration ``k`` (less the time of the stages timed
        inside it), in ``iter_k/timings.json``, when the block ends without an error and the stage has no time
        yet: a stage's time is that of the run that finished it (a resumed stage's finished chunks cost it
        nothing), and a finished run that is run again changes nothing."""
        self._timing.append([time.perf_counter(), 0.0])
        ok = False
        try:
            yield
            ok = True
        finally:
            start, nested = self._timing.pop()
            spent = time.perf_counter() - start
            if self._timing:
                self._timing[-1][1] += spent
            if ok and stage not in self.iteration_timings(k):
                self.set_timing(k, stage, spent - nested)

    def set_timing(self, k: int, stage: str, seconds: float) -> None:
        timings = self.iteration_timings(k)
        if timings.get(stage) != round(float(seconds), 3):
            timings[stage] = round(float(seconds), 3)
            atomic_write_json(self.iteration(k) / "timings.json", timings)

    # -- results ---------------------------------------------------------------------------------------------
    def write_results(self, config: dict, records: list, *, finetune: dict, unavailable: dict,
                      model_weights: str | None = None):
        """``results.json``: every metric measured so far, the fine-tunes' records, every stage's time and the base
        weights the run started from."""
        from mafl.metrics.results import Results, write_results

        for k in {int(k) for k in finetune} | {r.iteration for r in records}:
            self.iteration_timings(k)
        results = Results.from_config(config, records, finetune=finetune, timings=self.timings,
                                      unavailable=unavailable, model_weights=model_weights)
        results.path = write_results(self.root, results)
        return results
