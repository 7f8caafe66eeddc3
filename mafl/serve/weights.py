"""What a folder given to ``mafl serve`` holds: the base model and the fine-tuned weights to serve, by name.

* a run folder (``config.yaml`` and ``iter_k/models/<model>/``): the run's base model (``model`` of its config)
  and every model of every iteration, named ``iter_k/<model>``;
* a weights folder (``<run>/iter_k/models``, or any folder of adapter folders): each model by its folder's name;
* one adapter folder: the adapter, by its folder's name.

A LoRA adapter names its base model (``base_model_name_or_path`` of ``adapter_config.json``), which is the base
model of a weights or adapter folder unless ``--model`` says otherwise.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from mafl.models import is_adapter_folder
from mafl.run_folder import RunFolder



@dataclass
class ServedWeights:
    base: str | None  # the base model's folder (or hub name); None: not known from the folder
    adapters: dict[str, str] = field(default_factory=dict)  # served name -> folder
    model: dict = field(default_factory=dict)  # a run's model settings (dtype, chat_template, trust_remote_code)


def _is_model_folder(path: Path) -> bool:
    return path.is_dir() and (is_adapter_folder(path) or (path / "config.json").exists())


def _adapter_base(path: Path) -> str | None:
    if not is_adapter_folder(path):
        return None
    return json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")


def find_weights(folder: str | Path) -> ServedWeights:
    """The base model and the named weights of a run, weights or adapter folder (see the module docstring)."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder at {folder}")
    if (folder / "config.yaml").exists():
        from omegaconf import OmegaConf

        from mafl.model_path import resolve_model_path
        from mafl.models import ModelSettings

        model = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=True).get("model") or {}
        settings = ModelSettings.from_cfg(model)
        base = resolve_model_path(settings)
        adapters = {}
        run = RunFolder(folder)
        for k, it_dir in run.iterations():
            models = run.models(k)
            for p in sorted(models.iterdir()) if models.is_dir() else []:
                if _is_model_folder(p) and not p.name.startswith("."):
                    adapters[f"{it_dir.name}/{p.name}"] = str(p)
        return ServedWeights(base=base, adapters=adapters, model=dict(
            dtype=settings.dtype, chat_template=settings.chat_template, trust_remote_code=settings.trust_remote_code))
    if _is_model_folder(folder):
        return ServedWeights(base=_adapter_base(folder), adapters={folder.name: str(folder)})
    adapters = {p.name: str(p) for p in sorted(folder.iterdir()) if _is_model_folder(p) and not p.name.startswith(".")}
    if not adapters:
        raise FileNotFoundError(f"{folder} is not a mafl run folder and holds no model or adapter folders")
    bases = {_adapter_base(Path(p)) for p in adapters.values()} - {None}
    return ServedWeights(base=bases.pop() if len(bases) == 1 else None, adapters=adapters)


def vllm_command(weights: ServedWeights, *, extra: str = "") -> str:
    """The ``vllm serve`` command that serves ``weights``' base model and LoRA adapters under the same names (a
    whole fine-tuned model cannot be a LoRA module: it is left out, with a note)."""
    if weights.base is None:
        raise ValueError("the base model is not known from the folder: pass --model")
    lora = {n: p for n, p in weights.adapters.items() if is_adapter_folder(p)}
    whole = sorted(set(weights.adapters) - set(lora))
    ranks = [int(json.loads((Path(p) / "adapter_config.json").read_text()).get("r") or 16) for p in lora.values()]
    parts = ["vllm", "serve", shlex.quote(weights.base)]
    if lora:
        parts += ["--enable-lora", "--max-lora-rank", str(max(ranks)), "--max-loras", str(min(len(lora), 8)),
                  "--lora-modules", *(shlex.quote(f"{n}={p}") for n, p in lora.items())]
    command = " ".join(parts) + (f" {extra}" if extra else "")
    if whole:
        command += f"\n# not served (whole fine-tuned models, not LoRA adapters): {', '.join(whole)}"
    return command
