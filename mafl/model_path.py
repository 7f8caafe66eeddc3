"""The base model's path: a local folder or a hub name as the config gives it, or the embedded tiny model
(``model.path: tiny``), built on first use. Above mafl/models.py, which the tiny model's own code uses."""
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
    return model.path


def base_weights(model: Mapping[str, Any]) -> str | None:
    """The sha256 of the base model's weights where mafl built them (the tiny model, by ``path: tiny`` or by its
    folder): runs whose tiny models differ (built on another kind of CPU) must not be averaged or paired. None for
    any other model, and for a tiny model not built yet. Reads the resolved ``model`` config; builds nothing."""
    from pathlib import Path

    from mafl.tiny import tiny_model_dir, tiny_weights

    path = str(model.get("path"))
    folder = tiny_model_dir(dict(model.get("tiny") or {})) if path == "tiny" else Path(path).expanduser()
    return tiny_weights(folder) if folder.is_dir() else None
