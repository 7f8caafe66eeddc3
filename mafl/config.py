"""Typed settings at the boundary: :func:`validate` builds every component's settings from the Hydra config
before any work starts. Each component owns its settings and their checks (``mafl/debate/settings.py``,
``mafl/finetune/settings.py``, ``mafl/metrics/settings.py``, ``SocietySettings`` in
``mafl/debate/society_models.py``, ``LoggerSettings`` in ``mafl/tracking.py``,
``BackendSettings`` in ``mafl/backends``, ``MethodSettings`` in ``mafl/methods``, ``ModelSettings`` in
``mafl/models.py``, ``DatasetSettings`` in ``mafl/tasks``, whose task checks the dataset's keys);
this module checks what belongs to the run as a whole and what crosses components.

A bad value raises :class:`ConfigError` with a one-line message that names the key, e.g.
``debate.agents: must be >= 1 (got 0)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from omegaconf import OmegaConf

from mafl.backends import BackendSettings
from mafl.debate.settings import DebateSettings
from mafl.debate.society_models import SocietySettings
from mafl.errors import ConfigError
from mafl.finetune.settings import FinetuneSettings
from mafl.methods import MethodSettings, make_society, start_weights, with_objective
from mafl.metrics.settings import MetricsSettings
from mafl.models import ModelSettings
from mafl.registry import load
from mafl.tasks import DatasetSettings
from mafl.tracking import LoggerSettings

DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class Settings:
    """Every component's checked settings, built by :func:`validate` before any work starts; ``config`` is the
    resolved config as a plain dict, as it is saved (``results.json``) and sent to the tracker."""

    config: dict
    seed: int
    device: str
    model: ModelSettings
    dataset: DatasetSettings
    debate: DebateSettings
    finetune: FinetuneSettings
    method: MethodSettings
    backend: BackendSettings
    metrics: MetricsSettings
    logger: LoggerSettings
    society: SocietySettings = SocietySettings()  # society.models: agent n's base (a mixed society), or not mixed


def validate(cfg: Mapping[str, Any]) -> Settings:
    """Check every section a run needs; return every component's typed settings."""
    if cfg.get("device") not in DEVICES:
        raise ConfigError(f"device: {cfg.get('device')!r} is not one of {', '.join(DEVICES)}")
    if cfg["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device: cuda was asked for but no GPU is visible (use device=cpu or auto)")
    if isinstance(cfg.get("seed"), bool) or not isinstance(cfg.get("seed"), int) or cfg["seed"] < 0:
        raise ConfigError(f"seed: must be an integer >= 0 (got {cfg.get('seed')!r})")
    finetune = FinetuneSettings.from_cfg(cfg["finetune"])
    method = MethodSettings.from_cfg(cfg["method"], finetune.iterations)
    finetune = with_objective(finetune, method)
    backend = BackendSettings.from_cfg(cfg["backend"])
    model = ModelSettings.from_cfg(cfg["model"])
    dataset = DatasetSettings.from_cfg(cfg["dataset"])
    debate = DebateSettings.from_cfg(cfg["debate"])
    society = SocietySettings.from_cfg(cfg.get("society"), cfg["model"])
    from mafl.backends import backend_class

    if finetune.mode == "full" and not backend_class(backend.name).capabilities.full_models:
        raise ConfigError(f"finetune.mode: full fine-tuning makes whole models, which backend={backend.name} cannot "
                          "serve beside the base model; use backend=hf or finetune=lora")
    if finetune.launcher == "openai" and backend.name != "openai":
        raise ConfigError(f"finetune.launcher: openai makes models that only an API serves; use backend=openai "
                          f"(got backend={backend.name})")
    if backend.name == "vllm":
        rank, limit = finetune.lora.get("r"), backend.options.get("max_lora_rank")
        if isinstance(rank, int) and isinstance(limit, int) and rank > limit:
            raise ConfigError(f"finetune.lora.r: {rank} is above backend.max_lora_rank ({limit})")
    config = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    settings = Settings(config=config, seed=cfg["seed"], device=cfg["device"], model=model, dataset=dataset, debate=debate,
                        finetune=finetune, method=method, backend=backend,
                        metrics=MetricsSettings.from_cfg(cfg.get("metrics")),
                        logger=LoggerSettings.from_cfg(cfg.get("logger")), society=society)
    if method.spec.prepare:
        settings = load(method.spec.prepare)(settings)
    settings.society.check(settings.debate.agents, method.label, method.shared, method.spec.mixed,
                           finetune.global_first)
    if method.spec.check:
        load(method.spec.check)(settings)
    if method.weights:
        start_weights(settings, make_society(settings))  # every model of the society has its weights there
    if finetune.iterations:
        finetune.check_arguments()  # last: it imports peft and trl, which fine-tuning needs anyway
    return settings
