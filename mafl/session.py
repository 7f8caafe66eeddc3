"""What one run holds while it works: its folder (:class:`~mafl.run_folder.RunFolder`: the layout, stage markers,
timings, ``results.json``), its generation (:class:`~mafl.generation.Generation`: the backend, loaded lazily and
freed for fine-tuning, adapters, the base lent to the fine-tunes, a mixed society's routing), the task and its
problems, the prompts, the tracker, and the metrics measured so far."""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mafl.config import Settings
from mafl.debate.settings import DebateSettings
from mafl.debate.society import Society
from mafl.finetune.settings import FinetuneSettings
from mafl.generation import Generation
from mafl.rundir import atomic_write_json, read_stage_file
from mafl.run_folder import RunFolder
from mafl.tasks.prompts import Prompts


@dataclass
class Session:
    run: RunFolder
    generation: Generation
    settings: Settings
    prompts: Prompts
    task: Any
    train: list
    eval: list
    tracker: Any
    progress: bool = True
    records: list = field(default_factory=list)
    finetune_log: dict = field(default_factory=dict)
    unavailable: dict = field(default_factory=dict)  # metric -> why it could not be measured
    model_weights: str | None = None  # the base weights' sha256 where mafl built them (mafl.model_weights.base_weights)

    @property
    def run_dir(self) -> Path:
        return self.run.root

    @property
    def debate(self) -> DebateSettings:
        return self.settings.debate

    @property
    def finetune(self) -> FinetuneSettings:
        return self.settings.finetune

    # -- measurement -----------------------------------------------------------------------------------------
    def measure(self, transcripts, society: Society, *, iteration: int, split: str) -> list:
        """Every metric of one iteration's debate, computed once and kept in ``iter_k/<split>/metrics.json``."""
        from mafl.metrics.iteration import compute_iteration_metrics
        from mafl.metrics.stats import MetricRecord

        path, missing_path = self.run.metrics(iteration, split), self.run.unavailable(iteration, split)
        records = read_stage_file(path, lambda p: [MetricRecord.from_json(d) for d in json.loads(p.read_text())])
        if records is not None:
            unavailable = read_stage_file(missing_path, lambda p: dict(json.loads(p.read_text()))) or {}
        else:
            from mafl.progress import stage

            metrics, unavailable = self.settings.metrics, {}
            backend = (self.generation.backend(society, stage=self.run.stage(iteration, "metrics"))
                       if metrics.diversity else None)
            with stage(f"iteration {iteration}: metrics ({split})"):
                records = compute_iteration_metrics(
                    transcripts, self.task, backend=backend, metrics_cfg=metrics, iteration=iteration,
                    split=split, seed=self.settings.seed, unavailable=unavailable)
            if unavailable:
                atomic_write_json(missing_path, unavailable)
            atomic_write_json(path, [r.to_json() for r in records])
        self.unavailable.update(unavailable)
        self.records = [r for r in self.records if not (r.iteration == iteration and r.split == split)] + records
        self.tracker.log_metrics(records, step=iteration)
        self.write_results()
        return records

    def record_finetune(self, iteration: int, sets: dict, models: dict) -> None:
        self.finetune_log[str(iteration)] = {"sets": sets, "models": models}

    def write_results(self):
        return self.run.write_results(self.settings.config, self.records, finetune=self.finetune_log,
                                      unavailable=self.unavailable, model_weights=self.model_weights)


@contextlib.contextmanager
def open_session(run_dir: Path, settings: Settings, progress: bool = True) -> Iterator[Session]:
    """Load the task and the base model's path, start the tracker; always finish the tracker."""
    from mafl.model_path import resolve_model_path
    from mafl.model_weights import base_weights
    from mafl.progress import line
    from mafl.tracking import make_tracker

    train, eval_ = settings.dataset.load_problems(train=settings.finetune.iterations > 0)
    society = settings.society
    if society.mixed:  # each base (not the run's own model, which no agent may speak with)
        base_paths = {name: resolve_model_path(m, progress=progress) for name, m in society.bases.items()}
        base_path = base_paths[society.models[0].name]
        shown = ", ".join(f"agent {n}: {m.name}" for n, m in enumerate(society.models))
        record = {"agents": [{"agent": n, "base": m.name, "path": base_paths[m.name]}
                             for n, m in enumerate(society.models)]}
        where = RunFolder(run_dir).society  # agent n's base and its path
        if not where.exists() or json.loads(where.read_text()) != record:
            atomic_write_json(where, record)
    else:
        base_paths, base_path = {}, resolve_model_path(settings.model, progress=progress)
        shown = base_path
    weights = base_weights([base_paths[m.name] for m in society.models] if society.mixed else [base_path])
    run = RunFolder(run_dir)
    run.check_base_weights(weights)  # before any work: a resumed run goes on from the same model
    tracker = make_tracker(settings.logger, run_dir, settings.config)
    generation = Generation(settings=settings, run_dir=run_dir, base_path=base_path, base_paths=base_paths,
                            progress=progress)
    session = Session(run=run, generation=generation, settings=settings,
                      prompts=settings.dataset.prompts, task=settings.dataset.task, train=train, eval=eval_,
                      tracker=tracker, progress=progress, model_weights=weights)
    line(f"{settings.method.name} on {settings.dataset.name} ({len(train)} train, {len(eval_)} eval problems), "
         f"model {shown}, run folder {run_dir}")
    try:
        yield session
    finally:
        generation.release_backend()
        tracker.finish()

