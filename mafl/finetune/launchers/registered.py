"""The registered fine-tuning launchers (``finetune.launcher``), each by its ``"module:Class"`` (imported only when
chosen); what a launcher is: mafl/finetune/launchers/__init__.py. The settings (mafl/finetune/settings.py) read the
names; no launcher imports the settings module, so it stays below them."""
from __future__ import annotations

from mafl.registry import Registry

LAUNCHERS: Registry[str] = Registry("fine-tuning launcher", "finetune.launcher")
LAUNCHERS.register("local", "mafl.finetune.launchers.local:LocalLauncher")
LAUNCHERS.register("ray", "mafl.finetune.launchers.ray:RayLauncher")
LAUNCHERS.register("slurm", "mafl.finetune.launchers.slurm:SlurmLauncher")
# jobs of an OpenAI-compatible fine-tuning API (finetune=openai; needs backend=openai)
LAUNCHERS.register("openai", "mafl.finetune.api:OpenAILauncher")
