"""The embedded default model (``model=tiny``): built by mafl on first use, cached, then loaded like any model.

    from mafl.tiny import ensure_tiny_model
    path = ensure_tiny_model(cfg.model.tiny)          # pretrains once (minutes), then returns at once
    model = AutoModelForCausalLM.from_pretrained(path)

The cache folder is ``$MAFL_HOME/tiny/<key>`` (``MAFL_HOME`` defaults to ``~/.cache/mafl``), where the key is a
hash of the recipe, the Arithmetic prompts and the corpus version; a change of any of them builds another
model. The folder holds the config, the weights, the tokenizer, a generation_config with eos/pad set, and
``recipe.json`` (the recipe, the measured pretraining time, the weights' sha256 and the torch build, CPU kernels
and threads that made them: the same recipe gives other weights on another kind of CPU).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from mafl.model_weights import RECIPE_FILE, tiny_weights, weights_sha256  # noqa: F401  (re-exported)
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


def ensure_tiny_model(recipe: Mapping[str, Any], *, home: str | Path | None = None, rebuild: bool = False,
                      progress: bool = True) -> Path:
    """The folder of the embedded model built with ``recipe``; pretrains it first when it is not cached.

    The build goes to a temporary folder that is renamed into place when complete, under a file lock, so
    parallel jobs build it once and a stopped build leaves nothing half-written behind.
    """
    from filelock import FileLock

    from mafl.tiny.pretrain import Recipe, pretrain

    description = _description(recipe)
    final = tiny_model_dir(recipe, home)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / RECIPE_FILE).exists() and not rebuild:
            return final
        with atomic_folder(final) as tmp:
            if progress:
                line(f"mafl: pretraining the tiny model into {final} (once; cached afterwards)")
            stats = pretrain(Recipe(**description["recipe"]), tmp, prompts=description["prompts"],
                             progress=progress)
            (tmp / RECIPE_FILE).write_text(json.dumps({**description, **stats}, indent=2, sort_keys=True))
    return final


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe.json of a built model (recipe, prompts, corpus version, pretraining seconds, ...)."""
    return json.loads((Path(path) / RECIPE_FILE).read_text())


__all__ = ["ensure_tiny_model", "tiny_model_dir", "tiny_model_key", "mafl_home", "read_recipe", "tiny_weights",
           "weights_sha256"]
