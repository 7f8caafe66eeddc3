"""``society.models``: which base model each agent speaks with (a mixed society), checked before any work starts.

``society.models: null`` (the default): every agent speaks with the run's ``model``, as in the paper. A list holds
one entry per agent (``debate.agents`` of them), each

* a model preset of ``conf/model`` by name (``phi3``, ``mistral``, ``llama3``, ``tiny``...); the run's own model's
  name (``model.name``) means the run's ``model`` section as configured, overrides included;
* or a mapping of :class:`~mafl.models.ModelSettings` keys merged over the run's ``model`` section (over the preset
  ``preset`` when it names one), with a ``name`` of its own, e.g. ``{name: tiny_s1, tiny: {seed: 1}}``: the
  embedded tiny model pretrained from another seed.

Agents whose entries have the same name share one base (the same settings, else a ConfigError); each base is
loaded once. Every model of agent n (its generator and its critic) is fine-tuned from agent n's base.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from mafl.errors import ConfigError, plain
from mafl.models import ModelSettings

PRESETS = Path(__file__).resolve().parents[1] / "conf" / "model"


def model_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def load_preset(name: str, key: str) -> dict:
    """The model preset ``conf/model/<name>.yaml`` as a plain dict; a ConfigError naming ``key`` when there is none."""
    from omegaconf import OmegaConf

    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{key}: {name!r} is not a model preset (one of {', '.join(model_presets())}) nor a mapping "
                          "of model keys")
    preset = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    preset.pop("defaults", None)  # the set-up a hub preset brings to a run of its own (conf/hub/), not model keys
    return preset


def preset_of_path(path: str, gguf: str | None = None) -> str | None:
    """The model preset whose model is ``path`` (a hub name; for ``path: gguf``, the model of the GGUF file
    ``gguf``), when that preset brings a set-up of its own (a ``defaults`` list: conf/hub/, conf/packaged/); None
    otherwise."""
    from omegaconf import OmegaConf

    for name in model_presets():
        preset = OmegaConf.to_container(OmegaConf.load(PRESETS / f"{name}.yaml"))
        if preset.get("defaults") and preset.get("path") == path and preset.get("gguf") == gguf:
            return name
    return None


def _merge(base: Mapping, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def entry_name(entry: Any) -> str:
    """The label of one ``society.models`` entry as written (a preset's name, or a mapping's ``name``), read from a
    saved config without loading anything (the report names each agent's base with it)."""
    return str(entry.get("name")) if isinstance(entry, Mapping) else str(entry)


def agent_bases(config: Mapping) -> list[str] | None:
    """Agent n's base name in a run's resolved config; None for a society of the run's one model."""
    models = (config.get("society") or {}).get("models")
    return [entry_name(e) for e in models] if models else None


@dataclass(frozen=True)
class SocietySettings:
    """``conf/society/*.yaml``. ``models``: agent n's base model, or None (every agent speaks with ``model``)."""

    models: tuple[ModelSettings, ...] | None = None

    @property
    def mixed(self) -> bool:
        return self.models is not None

    @property
    def bases(self) -> dict[str, ModelSettings]:
        """The distinct bases by name, in the order of the agents that first name them."""
        return {m.name: m for m in self.models or ()}

    @property
    def base_names(self) -> list[str] | None:
        """Agent n's base name (None: not mixed)."""
        return [m.name for m in self.models] if self.models is not None else None

    @classmethod
    def from_cfg(cls, c: Mapping | None, model: Mapping) -> "SocietySettings":
        """``c``: the ``society`` section (absent: not mixed); ``model``: the run's ``model`` section."""
        c = dict(plain(c) or {})
        unknown = sorted(set(c) - {"models"})
        if unknown:
            raise ConfigError(f"society.{unknown[0]}: unknown key; known keys: models")
        entries = c.get("models")
        if entries is None:
            return cls()
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"society.models: must be a list with one model per agent, or null (got {entries!r})")
        own = dict(plain(model))
        models = []
        for n, entry in enumerate(entries):
            key = f"society.models[{n}]"
            if isinstance(entry, str):
                raw = own if entry == str(own.get("name")) else load_preset(entry, key)
            elif isinstance(entry, Mapping):
                entry = dict(entry)
                if not entry.get("name"):
                    raise ConfigError(f"{key}: a mapping needs a name (its base's label in reports)")
                preset = entry.pop("preset", None)
                known = {f.name for f in fields(ModelSettings)}
                bad = sorted(set(entry) - known)
                if bad:
                    raise ConfigError(f"{key}.{bad[0]}: unknown key; known keys: preset, {', '.join(sorted(known))}")
                raw = _merge(load_preset(str(preset), f"{key}.preset") if preset else own, entry)
            else:
                raise ConfigError(f"{key}: must be a model preset's name or a mapping of model keys (got {entry!r})")
            try:
                settings = ModelSettings.from_cfg(raw)
            except ConfigError as e:
                raise ConfigError(f"{key}: {e}") from None
            models.append(settings)
        seen: dict[str, ModelSettings] = {}
        for n, m in enumerate(models):
            if seen.setdefault(m.name, m) != m:
                raise ConfigError(f"society.models[{n}]: another base is already named {m.name!r}; give each "
                                  "different base its own name")
        return cls(models=tuple(models))

    def check(self, agents: int, method: str, shared: bool, mixed_ok: bool, global_first: bool) -> None:
        """The society against the run: one entry per agent, a method that gives each agent its own model."""
        if not self.mixed:
            return
        if not mixed_ok or shared:
            raise ConfigError(f"society.models: method {method} has one shared model for every agent; a mixed "
                              "society needs a method with a model per agent (single, debate, multiagent_ft)")
        if len(self.models) != agents:
            raise ConfigError(f"society.models: needs one model per agent ({agents}, debate.agents), got "
                              f"{len(self.models)}")
        if global_first and len(self.bases) > 1:
            raise ConfigError("finetune.global_first: one global model cannot start the fine-tunes of different "
                              "bases; set it false for a mixed society")
