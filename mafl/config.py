"""Typed settings at the boundary: :func:`validate` builds every component's settings from the Hydra config
before any work starts. Each component owns its settings and their checks (``mafl/debate/settings.py``,
``mafl/finetune/settings.py``, ``mafl/metrics/settings.py``, ``SocietySettings`` in
``mafl/debate/society_models.py``, ``LoggerSettings`` in ``mafl/tracking.py``,
``BackendSettings`` in ``mafl/backends``, ``ModelSettings`` in ``mafl/models.py``, ``DatasetSettings`` in
``mafl/tasks``, whose task checks the dataset's keys); this module checks what belongs to the run as a whole and
what crosses components, and holds :class:`MethodSettings`, the keys of ``conf/method/*.yaml``.

Settings are a lower layer: this module imports only component settings, never a method or the pipeline. The
method is the layer above: the pipeline builds the settings here, then the registered method settles them
(:meth:`mafl.methods.Method.settle`: its objective, its ``prepare`` and ``check`` steps, its start weights), then
runs; :func:`mafl.pipeline.validate` does both steps.

A bad value raises :class:`ConfigError` with a one-line message that names the key, e.g.
``debate.agents: must be >= 1 (got 0)``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from omegaconf import OmegaConf

from mafl.backends import BackendSettings
from mafl.debate.settings import DebateSettings
from mafl.debate.society_models import SocietySettings, preset_of_path
from mafl.errors import ConfigError, choice, integer, known_keys
from mafl.finetune.settings import FinetuneSettings
from mafl.metrics.settings import MetricsSettings
from mafl.models import ModelSettings
from mafl.tasks import DatasetSettings
from mafl.tracking import LoggerSettings

DEVICES = ("cpu", "cuda", "auto")
MATCHES = ("answers", "tokens")  # what method=majority matches with the debate (method.match)


@dataclass(frozen=True)
class MethodSettings:
    """``conf/method/*.yaml``: the method ``name`` and how this run uses it; ``spec`` is the registered
    :class:`~mafl.methods.Method`, set when the method settles the settings (:meth:`~mafl.methods.Method.settle`)."""

    name: str
    label: str
    spec: Any = None
    single_model: bool = False  # one shared model fine-tuned on every agent's data (an ablation)
    weights: str | None = None  # a folder of fine-tuned weights the society starts from
    rationalize: str | None = None  # star: the question of a rationalisation request
    samples: int | None = None  # majority: answers per problem (None: debate.agents x debate.rounds)
    match: str = "answers"  # majority: matched with the debate on answers per problem, or on generated tokens
    reference: str | None = None  # majority, match=tokens: a debate run folder whose tokens to match (None: measure)
    max_samples: int = 64  # majority, match=tokens: at most this many answers per problem
    # majority, match=tokens: the debate whose tokens are matched (the run's debate before majority_samples)
    reference_debate: "DebateSettings | None" = None

    @property
    def shared(self) -> bool:
        """One model speaks for every agent."""
        return self.spec.shared or self.single_model

    @classmethod
    def from_cfg(cls, c: Mapping) -> "MethodSettings":
        """A ConfigError for an unknown key or a bad value (the name is checked by the registry of methods, when
        the method settles the settings)."""
        known_keys(c, "method", [f.name for f in fields(cls) if f.name not in ("spec", "reference_debate")])
        name, weights = str(c.get("name")), c.get("weights")
        return cls(name=name, label=str(c.get("label") or name),
                   single_model=bool(c.get("single_model", False)), weights=str(weights) if weights else None,
                   rationalize=c.get("rationalize"), samples=integer(c, "samples", "method", low=1, none_ok=True),
                   match=choice(c, "match", "method", MATCHES) if "match" in c else cls.match,
                   reference=str(c["reference"]) if c.get("reference") else None,
                   max_samples=integer(c, "max_samples", "method", low=1) if "max_samples" in c else cls.max_samples)


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
    """Check every section a run needs; return every component's typed settings, before the method settles them
    (:func:`mafl.pipeline.validate` builds and settles them)."""
    if cfg.get("device") not in DEVICES:
        raise ConfigError(f"device: {cfg.get('device')!r} is not one of {', '.join(DEVICES)}")
    if cfg["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device: cuda was asked for but no GPU is visible (use device=cpu or auto)")
    if isinstance(cfg.get("seed"), bool) or not isinstance(cfg.get("seed"), int) or cfg["seed"] < 0:
        raise ConfigError(f"seed: must be an integer >= 0 (got {cfg.get('seed')!r})")
    finetune = FinetuneSettings.from_cfg(cfg["finetune"])
    method = MethodSettings.from_cfg(cfg["method"])
    backend = BackendSettings.from_cfg(cfg["backend"])
    model = ModelSettings.from_cfg(cfg["model"])
    dataset = DatasetSettings.from_cfg(cfg["dataset"])
    debate = DebateSettings.from_cfg(cfg["debate"])
    society = SocietySettings.from_cfg(cfg.get("society"), cfg["model"])
    preset = preset_of_path(model.path, model.gguf)
    if preset is not None and model.name != preset:
        key, value = ("model.gguf", model.gguf) if model.gguf else ("model.path", model.path)
        raise ConfigError(f"{key}: {value} is the model of preset {preset}, which brings its set-up "
                          f"(token budgets, sampling, fine-tuning recipe: conf/hub/, conf/packaged/); choose it with "
                          f"model={preset}")
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
    return Settings(config=config, seed=cfg["seed"], device=cfg["device"], model=model, dataset=dataset, debate=debate,
                    finetune=finetune, method=method, backend=backend,
                    metrics=MetricsSettings.from_cfg(cfg.get("metrics")),
                    logger=LoggerSettings.from_cfg(cfg.get("logger")), society=society)
