"""The default recipe's tiny model, shipped with mafl: every machine starts from the same weights, and the first run
needs no pretraining.

The same recipe pretrained on another kind of CPU, with other float kernels or another number of threads gives
other weights (docs/tiny_model.md), so mafl carries one build of its default recipe:
``mafl/tiny/shipped_model/v<corpus version>/``, the folder that build wrote (its weights in float32 safetensors,
the tokenizer, the configs and its ``recipe.json``), and its weights' sha256 here. ``model=tiny`` with that recipe
copies the folder into the cache (``mafl.tiny.ensure_tiny_model``, atomically and under the cache's lock) and
checks the copy's hash there and on every later load; any other recipe is pretrained here, as before.
``mafl build-tiny`` still pretrains the default recipe on this machine, into ``<cache folder>-local``, and says
whether it gives the shipped weights.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mafl.errors import RunError
from mafl.model_weights import RECIPE_FILE, WEIGHTS_FILE, weights_sha256

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped_model"


class ShippedModelError(RunError):
    """The shipped model's files are missing or are not the weights mafl records (one line)."""


@dataclass(frozen=True)
class ShippedModel:
    """One shipped build: its folder under ``mafl/tiny/shipped_model/`` and the sha256 of its weights file."""

    folder: str
    weights_sha256: str

    @property
    def path(self) -> Path:
        return SHIPPED_DIR / self.folder

    def built_with(self) -> dict[str, Any]:
        """What built it (torch, CPU kernels, threads, processor), from its recipe.json."""
        return json.loads((self.path / RECIPE_FILE).read_text()).get("built_with", {})


# recipe key (mafl.tiny.tiny_model_key) -> its shipped build; one per corpus version
SHIPPED: dict[str, ShippedModel] = {
    "cca511f473275361": ShippedModel(
        "v7", "2f38d1025d6e533c2bf6a78a8507bcca4626af7afcdb123075d2a404094f84d9"),
}


def shipped_model(key: str) -> ShippedModel | None:
    """The shipped build of the recipe with this cache key, or None (the recipe is pretrained here)."""
    return SHIPPED.get(key)


def check_shipped(shipped: ShippedModel, folder: Path) -> None:
    """Raise ShippedModelError unless ``folder``'s weights are the shipped ones."""
    try:
        found = weights_sha256(folder)
    except OSError as e:
        raise ShippedModelError(f"the shipped tiny model's weights cannot be read ({e.strerror}: {e.filename}); "
                                "reinstall mafl, or build the model here with `mafl build-tiny`") from None
    if found != shipped.weights_sha256:
        raise ShippedModelError(
            f"the shipped tiny model in {folder} is damaged: its weights' sha256 is {found[:16]}, mafl ships "
            f"{shipped.weights_sha256[:16]}; reinstall mafl, or build the model here with `mafl build-tiny`")


def copy_shipped(shipped: ShippedModel, into: Path) -> None:
    """The shipped folder's files copied into ``into`` (a fresh folder), checked against the recorded hash; its
    recipe.json says where the weights came from (``source: shipped``)."""
    if not (shipped.path / WEIGHTS_FILE).is_file():
        raise ShippedModelError(f"the shipped tiny model is missing from {shipped.path} ({WEIGHTS_FILE}); reinstall "
                                "mafl, or build the model here with `mafl build-tiny`")
    for item in shipped.path.iterdir():
        if item.is_file():
            shutil.copyfile(item, into / item.name)
    check_shipped(shipped, into)
    record = json.loads((into / RECIPE_FILE).read_text())
    (into / RECIPE_FILE).write_text(json.dumps({**record, "source": "shipped"}, indent=2, sort_keys=True))


def why_different(shipped: Mapping[str, Any], here: Mapping[str, Any]) -> str:
    """What differs between the builds that made the shipped weights and a build here (their ``built_with``)."""
    names = {"cpu": "processor", "cpu_capability": "CPU kernels", "threads": "threads", "torch": "torch"}
    diffs = [f"{label} {here.get(k)} here, {shipped.get(k)} for the shipped build" for k, label in names.items()
             if here.get(k) != shipped.get(k)]
    if not diffs:
        return ("nothing recorded differs (processor, CPU kernels, threads, torch): another math library or "
                "microcode sums in another order")
    return "; ".join(diffs)


__all__ = ["SHIPPED", "SHIPPED_DIR", "ShippedModel", "ShippedModelError", "shipped_model", "check_shipped",
           "copy_shipped", "why_different"]
