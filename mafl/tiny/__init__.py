"""The embedded default model (``model=tiny``): shipped with mafl for the default recipe, built by mafl for any
other, cached, then loaded like any model.

    from mafl.tiny import ensure_tiny_model
    path = ensure_tiny_model(cfg.model.tiny)          # the shipped model (or, for another recipe, pretrains once)
    model = AutoModelForCausalLM.from_pretrained(path)

The cache folder is ``$MAFL_HOME/tiny/<key>`` (``MAFL_HOME`` defaults to ``~/.cache/mafl``), where the key is a
hash of the recipe, the Arithmetic prompts and the corpus version; a change of any of them builds another
model. The folder holds the config, the weights, the tokenizer, a generation_config with eos/pad set, and
``recipe.json`` (the recipe, the measured pretraining time, the weights' sha256 and the torch build, CPU kernels,
threads and processor that made them: the same recipe gives other weights on another kind of CPU). The default
recipe's model is not pretrained here: mafl ships one build of it (``mafl.tiny.shipped``), copied into the cache
and checked against its recorded sha256 on every load, so every machine starts from the same weights;
``build=True`` (``mafl build-tiny``) pretrains it here all the same, into ``<key>-local``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from mafl.model_weights import RECIPE_FILE, WEIGHTS_FILE, tiny_weights, weights_sha256  # noqa: F401  (re-exported)
from mafl.progress import line
from mafl.rundir import atomic_folder


def mafl_home(home: str | Path | None = None) -> Path:
    return Path(home or os.environ.get("MAFL_HOME") or Path.home() / ".cache" / "mafl").expanduser()


def _description(recipe: Mapping[str, Any]) -> dict[str, Any]:
    from mafl.tiny.corpus import CORPUS_VERSION, load_prompts
    from mafl.tiny.pretrain import Recipe

    return {"recipe": asdict(Recipe.from_mapping(recipe)), "prompts": load_prompts(),
            "corpus_version": CORPUS_VERSION}


def tiny_model_key(recipe: Mapping[str, Any]) -> str:
    """The cache key of a recipe: a hash of the recipe, the prompts and the corpus version."""
    blob = json.dumps(_description(recipe), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def tiny_model_dir(recipe: Mapping[str, Any], home: str | Path | None = None) -> Path:
    return mafl_home(home) / "tiny" / tiny_model_key(recipe)


LOCAL_SUFFIX = "-local"  # the folder of a shipped recipe built on this machine (``mafl build-tiny``)


def ensure_tiny_model(recipe: Mapping[str, Any], *, home: str | Path | None = None, rebuild: bool = False,
                      progress: bool = True, build: bool = False) -> Path:
    """The folder of the embedded model of ``recipe``: the shipped model where mafl ships this recipe's (unless
    ``build``), else the model built here, pretrained first when it is not cached (into ``<key>-local`` for a
    shipped recipe). Either goes to a temporary folder that is renamed into place when complete, under a file lock,
    so parallel jobs make it once and a stopped copy or build leaves nothing half-written behind."""
    from filelock import FileLock

    from mafl.tiny.pretrain import Recipe, pretrain
    from mafl.tiny.shipped import shipped_model

    description = _description(recipe)
    final = tiny_model_dir(recipe, home)
    shipped = shipped_model(final.name)
    if shipped is not None and not build:
        return _ensure_shipped(shipped, final, rebuild=rebuild, progress=progress)
    if shipped is not None:
        final = final.with_name(final.name + LOCAL_SUFFIX)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / RECIPE_FILE).exists() and not rebuild:
            return final
        with atomic_folder(final) as tmp:
            if progress:
                line(f"mafl: pretraining the tiny model into {final} (once; cached afterwards)")
            stats = pretrain(Recipe(**description["recipe"]), tmp, prompts=description["prompts"],
                             progress=progress)
            (tmp / RECIPE_FILE).write_text(json.dumps({**description, **stats, "source": "built"}, indent=2,
                                                      sort_keys=True))
    return final


def _ensure_shipped(shipped, final: Path, *, rebuild: bool, progress: bool) -> Path:
    """The shipped model copied into ``final`` (once), its weights' hash checked on every call: a damaged copy is
    copied again, and a folder there that holds a model built here (before mafl shipped this recipe's) is moved to
    ``<key>-local`` where that is free, else replaced."""
    from filelock import FileLock

    from mafl.tiny.shipped import copy_shipped

    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / RECIPE_FILE).exists() and not rebuild:
            if (final / WEIGHTS_FILE).is_file() and weights_sha256(final) == shipped.weights_sha256:
                return final
            aside = final.with_name(final.name + LOCAL_SUFFIX)
            if _source(final) != "shipped" and not aside.exists():
                os.replace(final, aside)
                if progress:
                    line(f"mafl: the tiny model built here before is now {aside}; runs use the shipped one")
        with atomic_folder(final) as tmp:
            if progress:
                line(f"mafl: the shipped tiny model ({shipped.weights_sha256[:12]}) into {final}")
            copy_shipped(shipped, tmp)
    return final


def _source(path: Path) -> str | None:
    """Where a cached model's weights came from (``shipped`` or ``built``; None for an older build or a bad file)."""
    try:
        return read_recipe(path).get("source")
    except (OSError, ValueError, AttributeError):
        return None


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe.json of a built model (recipe, prompts, corpus version, pretraining seconds, ...)."""
    return json.loads((Path(path) / RECIPE_FILE).read_text())


__all__ = ["ensure_tiny_model", "LOCAL_SUFFIX", "tiny_model_dir", "tiny_model_key", "mafl_home", "read_recipe",
           "tiny_weights", "weights_sha256"]
