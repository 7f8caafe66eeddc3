"""The hash of a model's weights where mafl built them (the embedded tiny model): two runs, or a run and its
fine-tuned models, on the same hash started from the same model. The same tiny recipe built on another kind of
CPU gives other weights (docs/tiny_model.md), so a recipe's name alone does not say which model a run used.
A leaf module: the tiny model's build, the model settings and the run folder all read it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

RECIPE_FILE = "recipe.json"  # what marks a folder as a built tiny model (mafl.tiny writes it)
WEIGHTS_FILE = "model.safetensors"


def weights_sha256(path: str | Path) -> str:
    """The sha256 of a built model's weights file (``model.safetensors``)."""
    digest = hashlib.sha256()
    with open(Path(path) / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tiny_weights(path: str | Path) -> str | None:
    """The weights' sha256 of the tiny model in ``path`` (its recipe.json's, or hashed now for a model built before
    the hash was recorded); None for a folder that is not a built tiny model."""
    path = Path(path)
    if not (path / RECIPE_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        return None
    return json.loads((path / RECIPE_FILE).read_text()).get("weights_sha256") or weights_sha256(path)
