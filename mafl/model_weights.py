"""The hash of a model's weights where mafl built them (the embedded tiny model): two runs, or a run and its
fine-tuned models, on the same hash started from the same model. The same tiny recipe built on another kind of
CPU gives other weights (docs/tiny_model.md), so a recipe's name alone does not say which model a run used.
A leaf module: the tiny model's build, the model settings, the session, the run folder and the report read it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

RECIPE_FILE = "recipe.json"  # what marks a folder as a built tiny model (mafl.tiny writes it)
GGUF_SOURCE_FILE = "gguf_source.json"  # what marks a folder made from a GGUF file (mafl.gguf_models writes it)
WEIGHTS_FILE = "model.safetensors"


def weights_sha256(path: str | Path) -> str:
    """The sha256 of a built model's weights file (``model.safetensors``)."""
    digest = hashlib.sha256()
    with open(Path(path) / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tiny_weights(path: str | Path) -> str | None:
    """The weights' sha256 of a model mafl built in ``path``: the tiny model (its recipe.json's, or hashed now for a
    model built before the hash was recorded) or one made from a GGUF file (its gguf_source.json's); None for any
    other folder."""
    path = Path(path)
    for record in (RECIPE_FILE, GGUF_SOURCE_FILE):
        if (path / record).is_file() and (path / WEIGHTS_FILE).is_file():
            return json.loads((path / record).read_text()).get("weights_sha256") or weights_sha256(path)
    return None


def base_weights(paths: Sequence[str]) -> str | None:
    """The sha256 of the agents' base weights where mafl built them (the tiny model), agent by agent joined with
    ``+`` for a mixed society (``?`` for a base it did not build); None when it built none of them. Runs whose
    tiny models differ (built on another kind of CPU) must not be averaged, paired or resumed on each other."""
    found = [tiny_weights(p) for p in paths]
    if not any(found):
        return None
    return "+".join(h or "?" for h in found)


def short_weights(weights: str) -> str:
    """``base_weights`` for a person: each hash's first 12 digits."""
    return "+".join(h[:12] for h in weights.split("+"))
