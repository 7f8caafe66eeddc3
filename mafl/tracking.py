"""Experiment tracking: a small Tracker that sends metrics and the config to Weights & Biases, or nowhere.

Tracking must never block or fail a run: every wandb call is guarded, the first error becomes a warning and
the tracker turns into a no-op. wandb is imported only when ``logger.name=wandb``; its mode comes from
``logger.mode`` (``WANDB_MODE``, default ``offline``) and its files go to ``<run>/wandb``. The caller calls
``finish()`` in a ``finally``::

    tracker = make_tracker(cfg.logger, run_dir, config)
    try:
        tracker.log_metrics(records, step=iteration)
    finally:
        tracker.finish()
"""
from __future__ import annotations

import importlib.util
import uuid
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from mafl.errors import ConfigError, choice, known_keys, number
from mafl.metrics.stats import MetricRecord
from mafl.rundir import atomic_write_text

LOGGERS = ("none", "wandb")


@dataclass(frozen=True)
class LoggerSettings:
    """``conf/logger/*.yaml``: ``name`` (none | wandb) and wandb's run settings."""

    name: str = "none"
    mode: str = "offline"
    project: str = "mafl"
    entity: str | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()
    run_name: str | None = None
    init_timeout: float = 90.0

    @classmethod
    def from_cfg(cls, c: Mapping | None) -> "LoggerSettings":
        """Missing keys take their defaults; an unknown key or a bad value is a ConfigError naming it."""
        p, c = "logger", dict(c or {})
        known_keys(c, p, [f.name for f in fields(cls)])
        tags = c.get("tags") or ()
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f"{p}.tags: must be a list of strings (got {tags!r})")
        return cls(name=choice({"name": c.get("name") or "none"}, "name", p, LOGGERS),
                   mode=str(c.get("mode") or "offline"), project=str(c.get("project") or "mafl"),
                   entity=c.get("entity"), group=c.get("group"), tags=tuple(tags), run_name=c.get("run_name"),
                   init_timeout=number({"init_timeout": c.get("init_timeout", 90.0)}, "init_timeout", p, low=0.0,
                                       strict_low=True))


def record_key(r: MetricRecord) -> str:
    """The tracker key of a record: ``eval/accuracy/debate``, ``eval/kl/agents/agent0``, ``.../agent0-1``."""
    key = f"{r.split}/{r.metric}"
    if r.agent is not None:
        key += f"/agent{r.agent}" + (f"-{r.other}" if r.other is not None else "")
    return key


def flatten_records(records: Iterable[MetricRecord]) -> dict[str, float]:
    """Records as a flat dict: the value under its key, the stderr under ``<key>_stderr``."""
    out: dict[str, float] = {}
    for r in records:
        key = record_key(r)
        out[key] = r.value
        if r.stderr is not None:
            out[f"{key}_stderr"] = r.stderr
    return out


class Tracker:
    """Tracks nothing; the base of every tracker."""

    def log_metrics(self, metrics: Iterable[MetricRecord] | Mapping[str, float], step: int) -> None: ...

    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def log_summary(self, summary: Mapping[str, Any]) -> None: ...

    def finish(self) -> None: ...


class WandbTracker(Tracker):
    """Weights & Biases; any exception from wandb disables the tracker with a warning."""

    def __init__(self, run_dir: str | Path, config: Mapping[str, Any] | None = None, *, mode: str = "offline",
                 project: str = "mafl", entity: str | None = None, group: str | None = None,
                 tags: Iterable[str] = (), name: str | None = None, init_timeout: float = 90.0):
        self.run = None
        if importlib.util.find_spec("wandb") is None:
            warnings.warn("logger.name=wandb but wandb is not installed (pip install wandb): not tracking")
            return
        run_dir = Path(run_dir)
        self._guard(lambda: self._init(run_dir, config, mode, project, entity, group, list(tags), name, init_timeout))

    def _init(self, run_dir, config, mode, project, entity, group, tags, name, init_timeout) -> None:
        import wandb

        run_dir.mkdir(parents=True, exist_ok=True)
        id_file = run_dir / "wandb_id.txt"  # a resumed run logs to the same wandb run
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        self.run = wandb.init(
            project=project, entity=entity, group=group, tags=tags or None, name=name or run_dir.name,
            id=run_id, resume="allow", dir=str(run_dir), mode=mode, config=dict(config or {}),
            settings=wandb.Settings(init_timeout=init_timeout, silent=True),
        )
        if self.run is not None:
            # charts use the iteration as x axis; wandb's own step only counts calls, so logging an earlier
            # iteration again (a resumed run, train and eval of one iteration) is never dropped
            self.run.define_metric("iteration")
            self.run.define_metric("*", step_metric="iteration")
            if mode != "disabled":
                atomic_write_text(id_file, run_id)

    def _guard(self, call) -> None:
        try:
            call()
        except Exception as e:  # noqa: BLE001 - tracking must never fail a run
            warnings.warn(f"wandb failed ({type(e).__name__}: {e}); tracking is off for the rest of this run")
            run, self.run = self.run, None
            if run is not None:
                try:
                    run.finish(exit_code=1)
                except Exception:  # noqa: BLE001
                    pass

    def log_metrics(self, metrics, step: int) -> None:
        if self.run is None:
            return
        data = dict(metrics) if isinstance(metrics, Mapping) else flatten_records(metrics)
        self._guard(lambda: self.run.log({**data, "iteration": step}))

    def log_config(self, config: Mapping[str, Any]) -> None:
        if self.run is not None:
            self._guard(lambda: self.run.config.update(dict(config), allow_val_change=True))

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        if self.run is not None:
            self._guard(lambda: self.run.summary.update(dict(summary)))

    def finish(self) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            try:
                run.finish()
            except Exception as e:  # noqa: BLE001
                warnings.warn(f"wandb finish failed ({type(e).__name__}: {e})")


def make_tracker(logger: LoggerSettings | Mapping[str, Any] | None, run_dir: str | Path,
                 config: Mapping[str, Any] | None = None) -> Tracker:
    """The tracker named by ``logger.name`` (``none`` or ``wandb``); ``config`` is the resolved config."""
    s = logger if isinstance(logger, LoggerSettings) else LoggerSettings.from_cfg(logger)
    if s.name == "wandb":
        return WandbTracker(run_dir, config, mode=s.mode, project=s.project, entity=s.entity, group=s.group,
                            tags=s.tags, name=s.run_name, init_timeout=s.init_timeout)
    return Tracker()
