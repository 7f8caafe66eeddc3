"""One run: build the settings and let the chosen method settle them (:func:`validate`), prepare the run folder
(its layout: mafl/run_folder.py), then let the method run: for every iteration the society debates, builds its
fine-tuning sets, fine-tunes each model, debates the eval problems and measures. Iteration 0 is the untuned
society. Every stage writes atomically and is skipped when its output is already there: the same command on the
same folder continues where a stopped run left off.
"""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mafl import config
from mafl.config import Settings
from mafl.errors import ConfigError
from mafl.methods import settle
from mafl.run_folder import RunFolder
from mafl.rundir import atomic_write_text

log = logging.getLogger("mafl")

# keys that may change between a run and its resumption: how the run works, not what it computes (each component
# declares its own: a backend class's ``operational_keys``, the fine-tunes' OPERATIONAL_KEYS)
VOLATILE_KEYS = ("resume", "run_dir", "logger", "verbose")


def operational_keys(config: dict) -> list[str]:
    """The dotted keys of ``config`` (a resolved config as a dict) that a resumed run may change."""
    from mafl.backends import BACKENDS, backend_class
    from mafl.finetune.settings import OPERATIONAL_KEYS

    keys = list(VOLATILE_KEYS) + [f"finetune.{k}" for k in OPERATIONAL_KEYS]
    name = (config.get("backend") or {}).get("name")
    if name in BACKENDS:
        keys += [f"backend.{k}" for k in getattr(backend_class(name), "operational_keys", ())]
    return keys


def _without(config: dict, keys: list[str]) -> dict:
    for key in keys:
        *parents, last = key.split(".")
        node = config
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return config


def validate(cfg) -> Settings:
    """The settings a run of ``cfg`` works with: every component's, built and checked (:func:`mafl.config.validate`),
    then settled by the chosen method (:meth:`mafl.methods.Method.settle`); a one-line ConfigError otherwise."""
    settings = settle(config.validate(cfg))
    if settings.finetune.iterations:
        from mafl.finetune.launchers import check_finetune

        check_finetune(settings.finetune)  # last: it imports peft and trl, which fine-tuning needs anyway
    return settings


def resolve_run_dir(cfg: DictConfig) -> Path:
    if cfg.get("run_dir"):
        return Path(str(cfg.run_dir)).expanduser().resolve()
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir).resolve()
    except Exception:  # not launched by Hydra
        raise ConfigError("run_dir: not set, and the run was not launched by Hydra; pass run_dir=<folder>") from None


# sections added since a run may have been made, at their default: absent from its saved config, they are the same
ADDED_SECTIONS = {"society": {"models": None}}


def comparable(cfg: DictConfig | dict) -> dict:
    """The config without the keys a resumed run may change (:func:`operational_keys`)."""
    d = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    d = _without(d, operational_keys(d))
    for key, default in ADDED_SECTIONS.items():
        if d.get(key) == default:
            d.pop(key)
    return d


def _first_difference(a, b, prefix="") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            diff = _first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
            if diff:
                return diff
        return None
    return None if a == b else prefix


def prepare_run_dir(cfg: DictConfig, run_dir: Path) -> None:
    """Save the resolved config; refuse to mix two different runs in one folder."""
    saved = RunFolder(run_dir).config
    if saved.exists():
        if not cfg.resume:
            raise ConfigError(f"resume: {run_dir} already holds a run; pass resume=true to continue it, "
                              "or choose another run_dir")
        old = comparable(OmegaConf.to_container(OmegaConf.load(saved), resolve=True))
        diff = _first_difference(old, comparable(cfg))
        if diff and not RunFolder(run_dir).holds_work():  # refused before any work: the new config replaces it
            log.warning("%s: %s differs from the config saved there, which computed nothing: the new one replaces it",
                        run_dir, diff)
            diff = None
        if not diff:
            from mafl.rundir import remove_leftovers

            for path in remove_leftovers(run_dir):
                log.info("removed %s, left by a stopped run", path)
        if diff:
            raise ConfigError(f"{diff}: differs from the run already in {run_dir} and would change its results; "
                              "resume it with the same value, or choose another run_dir (only keys that say how the "
                              "run works may change, e.g. backend.timeout)")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, OmegaConf.to_yaml(cfg, resolve=True))


def run(cfg: DictConfig) -> dict:
    """Run the experiment ``cfg`` describes; returns the results (as saved in ``results.json``)."""
    from mafl.progress import check_verbose, console_session

    verbose = check_verbose(cfg)
    settings = validate(cfg)
    run_dir = resolve_run_dir(cfg)
    prepare_run_dir(cfg, run_dir)
    with console_session(verbose):
        return settings.method.spec.run(run_dir, settings)
