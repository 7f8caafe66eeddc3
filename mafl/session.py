"""What one run holds while it works: the task and its problems, the prompts, the base model, the generation
backend (loaded lazily, freed for fine-tuning), the tracker, the metrics measured so far, and the wall time of
every stage of every iteration (``iter_k/timings.json``; see :meth:`Session.timed`)."""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mafl.config import Settings
from mafl.debate.settings import DebateSettings
from mafl.finetune.settings import FinetuneSettings
from mafl.tasks.prompts import Prompts
from mafl.debate.society import Society
from mafl.rundir import atomic_write_json, read_stage_file


@dataclass
class Session:
    run_dir: Path
    settings: Settings
    prompts: Prompts
    task: Any
    train: list
    eval: list
    base_path: str  # the base model's path (a mixed society: agent 0's base's)
    tracker: Any
    progress: bool = True
    records: list = field(default_factory=list)
    finetune_log: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)  # {iteration: {stage: seconds}}
    _timing: list = field(default_factory=list, repr=False)  # the open stages: [start, seconds of nested stages]
    unavailable: dict = field(default_factory=dict)  # metric -> why it could not be measured
    base_paths: dict = field(default_factory=dict)  # a mixed society (society.models): base name -> its path
    _backend: Any = field(default=None, repr=False)
    _loaded: dict = field(default_factory=dict, repr=False)

    @property
    def debate(self) -> DebateSettings:
        return self.settings.debate

    @property
    def finetune(self) -> FinetuneSettings:
        return self.settings.finetune

    # -- the backend -----------------------------------------------------------------------------------------
    def backend(self, society: Society, stage: str | None = None):
        """The generation backend, holding exactly ``society``'s fine-tuned weights; ``stage`` names what its
        next requests are for (``iter_k/train``...) in the usage ledger of a backend that keeps one (an API's)."""
        if self._backend is None and society.mixed:
            from mafl.backends import backend_class
            from mafl.backends.society import SocietyBackend

            bases = {name: (self.base_paths[name], model) for name, model in self.settings.society.bases.items()}
            self._backend = SocietyBackend.build(
                backend_class(self.settings.backend.name), bases, society.routes(), device=self.settings.device,
                progress=self.progress, **self.settings.backend.options)
            self._loaded = {}
        if self._backend is None:
            from mafl.backends import backend_class

            backend = self.settings.backend
            self._backend = backend_class(backend.name)(
                self.base_path, dtype=self.settings.model.dtype, device=self.settings.device,
                chat_template=self.settings.model.chat_template,
                trust_remote_code=self.settings.model.trust_remote_code,
                progress=self.progress, **backend.options,
            )
            self._loaded = {}
            if getattr(self._backend, "usage", None) is not None:
                self._backend.usage.attach(self.run_dir)
        if stage is not None and getattr(self._backend, "usage", None) is not None:
            self._backend.usage.stage = stage
        for name in [n for n in self._loaded if n not in society.weights]:
            self._backend.unload(name)
            del self._loaded[name]
        for name, path in society.weights.items():
            if self._loaded.get(name) != path:
                self._backend.load_adapter(name, path)
                self._loaded[name] = path
        return self._backend

    def base_of(self, model: str) -> tuple[str, Any]:
        """(path, :class:`~mafl.models.ModelSettings`) of the base that ``model`` of the society is fine-tuned
        from: its agent's base in a mixed society, else the run's model."""
        society = self.settings.society
        if not society.mixed:
            return self.base_path, self.settings.model
        from mafl.debate.society import agent_of

        base = society.models[agent_of(model)]
        return self.base_paths[base.name], base

    def lend_base(self):
        """Before the fine-tunes of an iteration: the backend's base model, when LoRA fine-tunes can train on it
        in this process (``finetune.launcher=local`` with ``share_base``, one process per fine-tune, a backend
        that lends it: hf), so it is not loaded again; else None, and the backend is freed for fine-tuning (a mixed
        society's backend lends none: each fine-tune loads its own agent's base)."""
        ft = self.finetune
        lendable = (ft.mode == "lora" and ft.launcher == "local" and ft.accelerate is None
                    and ft.options("local").get("share_base", True) and hasattr(self._backend, "lend_base"))
        if not lendable:
            self.release_backend()
            return None
        self._loaded = {}  # the adapters are unloaded; session.backend() loads the next society's
        return self._backend.lend_base()

    def release_backend(self) -> None:
        """Free the backend's memory (fine-tuning loads its own copy of the base model)."""
        if self._backend is not None:
            self._backend.close()
            self._backend, self._loaded = None, {}
            import gc

            gc.collect()

    # -- measurement -----------------------------------------------------------------------------------------
    def measure(self, transcripts, society: Society, *, iteration: int, split: str) -> list:
        """Every metric of one iteration's debate, computed once and kept in ``iter_k/<split>/metrics.json``."""
        from mafl.metrics.iteration import compute_iteration_metrics
        from mafl.metrics.stats import MetricRecord

        path = self.run_dir / f"iter_{iteration}" / split / "metrics.json"
        # metrics that could not be measured (a server without prompt log-probabilities), with the reason
        missing_path = path.with_name("unavailable.json")
        records = read_stage_file(path, lambda p: [MetricRecord.from_json(d) for d in json.loads(p.read_text())])
        if records is not None:
            unavailable = read_stage_file(missing_path, lambda p: dict(json.loads(p.read_text()))) or {}
        else:
            from mafl.progress import stage

            metrics, unavailable = self.settings.metrics, {}
            backend = self.backend(society, stage=f"iter_{iteration}/metrics") if metrics.diversity else None
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

    # -- wall time -------------------------------------------------------------------------------------------
    def iteration_timings(self, iteration: int) -> dict:
        key = str(iteration)
        if key not in self.timings:
            path = self.run_dir / f"iter_{iteration}" / "timings.json"
            self.timings[key] = json.loads(path.read_text()) if path.exists() else {}
        return self.timings[key]

    @contextlib.contextmanager
    def timed(self, iteration: int, stage: str):
        """Record the wall time of the block as ``stage`` of ``iteration`` (less the time of the stages timed
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
            if ok and stage not in self.iteration_timings(iteration):
                self.set_timing(iteration, stage, spent - nested)

    def set_timing(self, iteration: int, stage: str, seconds: float) -> None:
        timings = self.iteration_timings(iteration)
        if timings.get(stage) != round(float(seconds), 3):
            timings[stage] = round(float(seconds), 3)
            atomic_write_json(self.run_dir / f"iter_{iteration}" / "timings.json", timings)

    def write_results(self):
        from mafl.metrics.results import Results, write_results

        for k in {int(k) for k in self.finetune_log} | {r.iteration for r in self.records}:
            self.iteration_timings(k)
        results = Results.from_config(self.settings.config, self.records,
                                      finetune=self.finetune_log, timings=self.timings,
                                      unavailable=self.unavailable)
        results.path = write_results(self.run_dir, results)
        return results


@contextlib.contextmanager
def open_session(run_dir: Path, settings: Settings, progress: bool = True) -> Iterator[Session]:
    """Load the task and the base model's path, start the tracker; always finish the tracker."""
    from mafl.model_path import resolve_model_path
    from mafl.progress import line
    from mafl.tracking import make_tracker

    train, eval_ = settings.dataset.load_problems()
    society = settings.society
    if society.mixed:  # each base (not the run's own model, which no agent may speak with)
        base_paths = {name: resolve_model_path(m, progress=progress) for name, m in society.bases.items()}
        base_path = base_paths[society.models[0].name]
        shown = ", ".join(f"agent {n}: {m.name}" for n, m in enumerate(society.models))
        record = {"agents": [{"agent": n, "base": m.name, "path": base_paths[m.name]}
                             for n, m in enumerate(society.models)]}
        where = run_dir / "society.json"  # agent n's base and its path
        if not where.exists() or json.loads(where.read_text()) != record:
            atomic_write_json(where, record)
    else:
        base_paths, base_path = {}, resolve_model_path(settings.model, progress=progress)
        shown = base_path
    tracker = make_tracker(settings.logger, run_dir, settings.config)
    session = Session(run_dir=run_dir, settings=settings,
                      prompts=settings.dataset.prompts, task=settings.dataset.task, train=train, eval=eval_,
                      base_path=base_path, tracker=tracker, progress=progress, base_paths=base_paths)
    line(f"{settings.method.name} on {settings.dataset.name} ({len(train)} train, {len(eval_)} eval problems), "
         f"model {shown}, run folder {run_dir}")
    try:
        yield session
    finally:
        session.release_backend()
        tracker.finish()

