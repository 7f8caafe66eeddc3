"""Methods: each is a way to run the shared loop (mafl/methods/society_loop.py: debate -> sets -> fine-tunes ->
evaluation), chosen by ``method.name``; ``method.label`` names the method's row in reports.

``single``, ``majority`` and ``debate`` evaluate the untuned society with 1 agent x 1 round, N agents x 1 round,
and N agents x R rounds (they never fine-tune, whatever ``finetune.iterations`` says). ``multiagent_ft`` fine-tunes
each agent's generator and critic on its own slice of the debate (its ablations are presets of it:
conf/method/multiagent_ft_*.yaml); ``majority_ft`` fine-tunes one shared model on its own majority-voted samples;
``star`` fine-tunes one model on its rationales that reach the ground truth (mafl/methods/star.py).
``method.weights`` starts any society from saved fine-tuned weights (zero-shot transfer).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from omegaconf import DictConfig

from mafl.config import DebateSettings, FinetuneSettings

METHODS = {
    "single": "mafl.methods.society_loop:run_society_loop",
    "majority": "mafl.methods.society_loop:run_society_loop",
    "debate": "mafl.methods.society_loop:run_society_loop",
    "multiagent_ft": "mafl.methods.society_loop:run_society_loop",
    "majority_ft": "mafl.methods.society_loop:run_society_loop",
    "star": "mafl.methods.star:run_star",
}


def run_method(cfg: DictConfig, run_dir: Path, debate: DebateSettings, finetune: FinetuneSettings) -> dict:
    module, _, attr = METHODS[cfg.method.name].partition(":")
    return getattr(importlib.import_module(module), attr)(cfg, run_dir, debate, finetune)
