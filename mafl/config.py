"""Typed settings at the boundary: the Hydra config is checked here, before any work starts.

A bad value raises :class:`ConfigError` with a one-line message that names the key, e.g.
``debate.agents: must be >= 1 (got 0)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

TASKS = ("arithmetic", "gsm8k", "math", "jsonl")
METHODS = ("single", "majority", "debate", "multiagent_ft", "majority_ft", "star")
DEVICES = ("cpu", "cuda", "auto")


class ConfigError(ValueError):
    """A config value that cannot work; the message starts with the key."""


def _int(cfg: Mapping, key: str, prefix: str, *, low: int | None = None, none_ok: bool = False) -> int | None:
    value = cfg.get(key)
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{prefix}.{key}: must be an integer (got {value!r})")
    if low is not None and value < low:
        raise ConfigError(f"{prefix}.{key}: must be >= {low} (got {value})")
    return value


def _float(cfg: Mapping, key: str, prefix: str, *, low: float | None = None, high: float | None = None,
           strict_low: bool = False, none_ok: bool = False) -> float | None:
    value = cfg.get(key)
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{prefix}.{key}: must be a number (got {value!r})")
    if low is not None and (value <= low if strict_low else value < low):
        raise ConfigError(f"{prefix}.{key}: must be {'>' if strict_low else '>='} {low} (got {value})")
    if high is not None and value > high:
        raise ConfigError(f"{prefix}.{key}: must be <= {high} (got {value})")
    return float(value)


def _choice(cfg: Mapping, key: str, prefix: str, choices) -> str:
    value = cfg.get(key)
    if value not in choices:
        raise ConfigError(f"{prefix}.{key}: {value!r} is not one of {', '.join(map(str, choices))}")
    return value


@dataclass(frozen=True)
class DebateSettings:
    agents: int
    rounds: int
    max_others: int | None
    summarize: bool
    summarizer: str
    context: str
    topology: str
    adjacency: list | None
    critics: bool
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    summary_max_new_tokens: int
    chunk_size: int

    @classmethod
    def from_cfg(cls, c: Mapping) -> "DebateSettings":
        p = "debate"
        s = cls(
            agents=_int(c, "agents", p, low=1),
            rounds=_int(c, "rounds", p, low=1),
            max_others=_int(c, "max_others", p, low=1, none_ok=True),
            summarize=bool(c.get("summarize", False)),
            summarizer=_choice(c, "summarizer", p, ("base", "self")),
            context=_choice(c, "context", p, ("conversation", "others")),
            topology=_choice(c, "topology", p, ("full", "ring", "custom")),
            adjacency=list(c["adjacency"]) if c.get("adjacency") is not None else None,
            critics=bool(c.get("critics", True)),
            temperature=_float(c, "temperature", p, low=0.0),
            top_p=_float(c, "top_p", p, low=0.0, high=1.0, strict_low=True),
            top_k=_int(c, "top_k", p, low=0),
            max_new_tokens=_int(c, "max_new_tokens", p, low=1),
            summary_max_new_tokens=_int(c, "summary_max_new_tokens", p, low=1),
            chunk_size=_int(c, "chunk_size", p, low=1),
        )
        from mafl.debate.society import readers

        readers(s.agents, s.topology, s.adjacency)  # checks a custom adjacency
        return s


@dataclass(frozen=True)
class FinetuneSettings:
    mode: str
    iterations: int
    init: str
    critic_w: float | None
    min_agreement: float | None
    max_examples: int | None
    lora: dict
    train: dict

    @classmethod
    def from_cfg(cls, c: Mapping) -> "FinetuneSettings":
        p = "finetune"
        train = dict(c.get("train") or {})
        if "learning_rate" in train:
            _float(train, "learning_rate", f"{p}.train", low=0.0, strict_low=True)
        if "num_train_epochs" in train:
            _float(train, "num_train_epochs", f"{p}.train", low=0.0, strict_low=True)
        if "per_device_train_batch_size" in train:
            _int(train, "per_device_train_batch_size", f"{p}.train", low=1)
        return cls(
            mode=_choice(c, "mode", p, ("lora", "full")),
            iterations=_int(c, "iterations", p, low=0),
            init=_choice(c, "init", p, ("previous", "base")),
            critic_w=_float(c, "critic_w", p, low=0.0, high=1.0, none_ok=True),
            min_agreement=_float(c, "min_agreement", p, low=0.0, high=1.0, none_ok=True),
            max_examples=_int(c, "max_examples", p, low=1, none_ok=True),
            lora=dict(c.get("lora") or {}),
            train=train,
        )


def check_dataset(c: Mapping) -> None:
    p = "dataset"
    _choice(c, "task", p, TASKS)
    _int(c, "n_train", p, low=1, none_ok=True)
    _int(c, "n_eval", p, low=1, none_ok=True)
    _int(c, "eval_seed", p, low=0)
    _int(c, "train_seed", p, low=0)
    _choice(c, "protocol", p, ("heldout", "official"))
    if c["task"] == "arithmetic":
        low = _int(c, "low", p)
        _int(c, "high", p, low=low)
    data_dir = c.get("data_dir")
    for key in ("train_file", "eval_file"):
        name = c.get(key)
        if name is None or c["task"] == "arithmetic":
            continue
        path = Path(data_dir) / name if data_dir else Path(name)
        if (data_dir or c["task"] == "jsonl") and not path.exists():
            raise ConfigError(f"{p}.{key}: no such file {path}" + (" (dataset.data_dir / MAFL_DATA_DIR)" if data_dir else ""))


def check_model(c: Mapping) -> None:
    path = str(c.get("path"))
    if path != "tiny" and (path.startswith((".", "/", "~")) and not Path(path).expanduser().exists()):
        raise ConfigError(f"model.path: no such folder {path}")
    from mafl.models import DTYPES

    _choice(c, "dtype", "model", DTYPES)


def validate(cfg: Mapping[str, Any]) -> tuple[DebateSettings, FinetuneSettings]:
    """Check every section a run needs; return the typed debate and fine-tuning settings."""
    from mafl.backends import BACKENDS

    if cfg.get("device") not in DEVICES:
        raise ConfigError(f"device: {cfg.get('device')!r} is not one of {', '.join(DEVICES)}")
    if cfg["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device: cuda was asked for but no GPU is visible (use device=cpu or auto)")
    if isinstance(cfg.get("seed"), bool) or not isinstance(cfg.get("seed"), int) or cfg["seed"] < 0:
        raise ConfigError(f"seed: must be an integer >= 0 (got {cfg.get('seed')!r})")
    _choice(cfg["method"], "name", "method", METHODS)
    _choice(cfg["backend"], "name", "backend", tuple(BACKENDS))
    check_model(cfg["model"])
    check_dataset(cfg["dataset"])
    debate = DebateSettings.from_cfg(cfg["debate"])
    finetune = FinetuneSettings.from_cfg(cfg["finetune"])
    if cfg["backend"]["name"] == "vllm":
        if finetune.mode == "full":
            raise ConfigError("finetune.mode: full fine-tuning makes whole models, which backend=vllm cannot serve "
                              "beside the base model; use backend=hf or finetune=lora")
        rank, limit = finetune.lora.get("r"), cfg["backend"].get("max_lora_rank")
        if isinstance(rank, int) and isinstance(limit, int) and rank > limit:
            raise ConfigError(f"finetune.lora.r: {rank} is above backend.max_lora_rank ({limit})")
    from mafl.debate.prompts import Prompts

    Prompts.from_cfg(cfg["dataset"].get("prompts") or {})
    return debate, finetune
