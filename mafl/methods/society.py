"""The society a run's settings describe, and the fine-tuned weights it starts from (``method.weights``)."""
from __future__ import annotations

from pathlib import Path

from mafl.config import Settings
from mafl.debate.society import Society
from mafl.errors import ConfigError


def make_society(settings: Settings) -> Society:
    """multiagent_ft: 2N models (N without critics); majority_ft, star and the single-model ablation: one shared
    model. A mixed society (``society.models``) knows each agent's base."""
    debate = settings.debate
    return Society(agents=debate.agents, critics=debate.critics and debate.rounds > 1, shared=settings.method.shared,
                   bases=settings.society.base_names)


def start_weights(settings: Settings, society: Society) -> dict[str, str]:
    """``method.weights``: a folder of fine-tuned weights (e.g. ``<run>/iter_2/models``) holding every model of the
    society, which it starts from (zero-shot transfer: fine-tune on one dataset, evaluate on another)."""
    folder = settings.method.weights
    if not folder:
        return {}
    folder = Path(str(folder)).expanduser().resolve()
    missing = [m for m in society.models if not (folder / m).is_dir()]
    if missing:
        raise ConfigError(f"method.weights: {folder} holds no weights for {', '.join(missing)}")
    return {m: str(folder / m) for m in society.models}
