"""The base model's path: a local folder or a hub name as the config gives it, or the embedded tiny model
(``model.path: tiny``), built on first use. Above mafl/models.py, which the tiny model's own code uses."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from mafl.models import ModelSettings


def resolve_model_path(model: ModelSettings | Mapping[str, Any], *, progress: bool = True) -> str:
    """The folder (or hub name) of the base model; ``path: tiny`` builds the embedded model if not cached."""
    if not isinstance(model, ModelSettings):
        model = ModelSettings.from_cfg(model)
    if model.path == "tiny":
        from mafl.tiny import ensure_tiny_model

        return str(ensure_tiny_model(model.tiny, progress=progress))
    return model.path



def base_weights(paths: Sequence[str]) -> str | None:
    """The sha256 of the agents' base weights where mafl built them (the tiny model), agent by agent joined with
    ``+`` for a mixed society (``?`` for a base it did not build); None when it built none of them. Runs whose
    tiny models differ (built on another kind of CPU) must not be averaged, paired or resumed on each other."""
    from mafl.model_weights import tiny_weights

    found = [tiny_weights(p) for p in paths]
    if not any(found):
        return None
    return "+".join(h or "?" for h in found)


def short_weights(weights: str) -> str:
    """``base_weights`` for a person: each hash's first 12 digits."""
    return "+".join(h[:12] for h in weights.split("+"))
