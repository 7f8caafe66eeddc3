"""The error a bad config value raises, the checks every component's settings use to raise it, and config values
as plain Python.

A leaf module (it imports nothing of mafl), so any component can check its own settings without an import cycle.
A message starts with the key it is about and fits on one line, e.g. ``debate.agents: must be >= 1 (got 0)``.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping


class ConfigError(ValueError):
    """A config value that cannot work; the message starts with the key."""


class RunError(RuntimeError):
    """A run cannot go on (e.g. a server that still fails after its retries); the message is one line and holds no
    secret. The finished stages are kept: the same command resumes once the cause is fixed."""


def one_line(text, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs become one space), cut at ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def integer(cfg: Mapping, key: str, prefix: str, *, low: int | None = None, none_ok: bool = False) -> int | None:
    value = cfg.get(key)
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{prefix}.{key}: must be an integer (got {value!r})")
    if low is not None and value < low:
        raise ConfigError(f"{prefix}.{key}: must be >= {low} (got {value})")
    return value


def number(cfg: Mapping, key: str, prefix: str, *, low: float | None = None, high: float | None = None,
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


def choice(cfg: Mapping, key: str, prefix: str, choices: Iterable[Any]) -> Any:
    value, choices = cfg.get(key), list(choices)
    if value not in choices:
        raise ConfigError(f"{prefix}.{key}: {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def known_keys(cfg: Mapping, prefix: str, allowed: Iterable[str], what: str | None = None) -> None:
    """Refuse a key of ``cfg`` that is not in ``allowed`` (a typo would otherwise be ignored or fail late); the
    message lists the known keys, or says ``what`` they are."""
    allowed = set(allowed)
    unknown = sorted(str(k) for k in cfg if k not in allowed)
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}: unknown key; {what or 'known keys: ' + ', '.join(sorted(allowed))}")


def plain(value: Any) -> Any:
    """A config node (OmegaConf ``DictConfig``/``ListConfig``) as plain Python, resolved; anything else as is."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - omegaconf comes with hydra
        return value
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True, throw_on_missing=False)
    return value
