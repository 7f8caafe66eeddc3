"""The fine-tuning settings (``conf/finetune/*.yaml``), checked before any work starts."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Mapping

from mafl.errors import choice, integer, known_keys, number, plain

MODES = ("lora", "full")  # a LoRA adapter per model, or the whole model
# who runs an iteration's fine-tunes: here, with the local trainer | jobs of an OpenAI-compatible fine-tuning API
# (mafl/finetune/api.py, a launcher with the launchers' contract: run(jobs) -> records)
LAUNCHERS = {"local": None, "openai": "mafl.finetune.api:OpenAILauncher"}

if TYPE_CHECKING:
    from mafl.finetune.mixing import MixSettings


@dataclass(frozen=True)
class FinetuneSettings:
    mode: str
    iterations: int
    init: str
    critic_w: float | None
    min_agreement: float | None
    max_examples: int | None
    lora: dict
    train: dict
    mix_general: "MixSettings | None" = None
    global_first: bool = False
    launcher: str = "local"
    launcher_options: dict = field(default_factory=dict)  # {launcher name: finetune.<name>}

    def options(self, launcher: str) -> dict:
        """``finetune.<launcher>``: the options of one launcher."""
        return dict(self.launcher_options.get(launcher) or {})

    @classmethod
    def from_cfg(cls, c: Mapping) -> "FinetuneSettings":
        from mafl.finetune.mixing import MixSettings

        p = "finetune"
        known_keys(c, p, [f.name for f in fields(cls) if f.name != "launcher_options"] + list(LAUNCHERS))
        train = dict(c.get("train") or {})
        if "learning_rate" in train:
            number(train, "learning_rate", f"{p}.train", low=0.0, strict_low=True)
        if "num_train_epochs" in train:
            number(train, "num_train_epochs", f"{p}.train", low=0.0, strict_low=True)
        if "per_device_train_batch_size" in train:
            integer(train, "per_device_train_batch_size", f"{p}.train", low=1)
        return cls(
            mode=choice(c, "mode", p, MODES),
            iterations=integer(c, "iterations", p, low=0),
            init=choice(c, "init", p, ("previous", "base")),
            critic_w=number(c, "critic_w", p, low=0.0, high=1.0, none_ok=True),
            min_agreement=number(c, "min_agreement", p, low=0.0, high=1.0, none_ok=True),
            max_examples=integer(c, "max_examples", p, low=1, none_ok=True),
            lora=dict(c.get("lora") or {}),
            train=train,
            mix_general=MixSettings.from_cfg(c.get("mix_general")),
            global_first=bool(c.get("global_first", False)),
            launcher=choice({"launcher": c.get("launcher", "local")}, "launcher", p, LAUNCHERS),
            launcher_options={n: dict(plain(c.get(n)) or {}) for n in LAUNCHERS if c.get(n)},
        )

    def check_arguments(self) -> None:
        """``lora`` and ``train`` are passed straight to peft's ``LoraConfig`` and trl's ``SFTConfig``: a key that
        is not one of their arguments is refused now rather than at the first fine-tune (imports peft and trl)."""
        import dataclasses

        from peft import LoraConfig
        from trl import SFTConfig

        for key, cls, values in (("lora", LoraConfig, self.lora), ("train", SFTConfig, self.train)):
            known_keys(values, f"finetune.{key}", [f.name for f in dataclasses.fields(cls) if f.init],
                       what=f"not an argument of {cls.__module__.split('.')[0]} {cls.__name__}")
        if LAUNCHERS[self.launcher] is not None:
            from mafl.registry import load

            load(LAUNCHERS[self.launcher]).check(self)
