"""The base model's path: a local folder or a hub name as the config gives it, or the embedded tiny model
(``model.path: tiny``), built on first use, or a model made from a GGUF file (``model.path: gguf``), converted on
first use. Above mafl/models.py, which the tiny model's own code uses."""
from __future__ import annotations

from typing import Any, Mapping

from mafl.models import ModelSettings


def resolve_model_path(model: ModelSettings | Mapping[str, Any], *, progress: bool = True) -> str:
    """The folder (or hub name) of the base model; ``path: tiny`` builds the embedded model if not cached."""
    if not isinstance(model, ModelSettings):
        model = ModelSettings.from_cfg(model)
    if model.path == "tiny":
        from mafl.tiny import ensure_tiny_model

        return str(ensure_tiny_model(model.tiny, progress=progress))
    if model.path == "gguf":
        from mafl.gguf_models import ensure_gguf_model

        return str(ensure_gguf_model(model.gguf, sha256=model.gguf_sha256, progress=progress))
    return model.path
