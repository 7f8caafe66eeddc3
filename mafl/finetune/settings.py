"""The fine-tuning settings (``conf/finetune/*.yaml``), checked before any work starts.

Beside what each fine-tune does (``mode``, ``lora``, ``train``, ...), where the fine-tunes run: ``launcher`` (a
name of :data:`mafl.finetune.launchers.registered.LAUNCHERS`), its options ``finetune.<launcher>`` (e.g.
``finetune.ray``),
``resources`` of one fine-tune (``num_cpus``, ``num_gpus``; null: 1 GPU on a GPU device), ``max_retries`` of a
fine-tune whose process died, and ``accelerate``: an accelerate config (a mapping, or the path of a YAML file
written by ``accelerate config``), which makes each fine-tune a multi-process ``accelerate launch`` job.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Mapping

from mafl.errors import ConfigError, choice, integer, known_keys, number, plain
from mafl.finetune.finetune_one import MODES, OBJECTIVES

# finetune.* keys that say where and with what the fine-tunes run, not what they make: they may change when a run
# is resumed (more CPUs, another Slurm partition, more retries)
OPERATIONAL_KEYS = ("resources", "max_retries", "ray", "slurm")

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
    resources: dict = field(default_factory=dict)
    max_retries: int = 2
    launcher_options: dict = field(default_factory=dict)  # {launcher name: finetune.<name>}
    accelerate: dict | None = None
    objective: str | None = None  # sft | dpo | sft+dpo | grpo; None: the method's (mafl.methods.with_objective)
    max_pairs: int | None = None  # the most preference pairs of one model (None: no cap)
    dpo: dict = field(default_factory=dict)  # trl DPOConfig arguments, passed straight through
    reward: str = "majority"  # grpo: a name of mafl.finetune.rewards.REWARDS
    reward_kwargs: dict = field(default_factory=dict)  # grpo: the reward's own arguments (correction: bonus)
    max_prompts: int | None = None  # grpo: the most prompts of one model (None: no cap)
    grpo: dict = field(default_factory=dict)  # trl GRPOConfig arguments, passed straight through

    @property
    def uses_pairs(self) -> bool:
        """The models train on preference pairs (``objective`` dpo or sft+dpo)."""
        return self.objective in ("dpo", "sft+dpo")

    @property
    def uses_prompts(self) -> bool:
        """The models are trained by reinforcement learning on prompts (``objective`` grpo)."""
        return self.objective == "grpo"

    def options(self, launcher: str) -> dict:
        """``finetune.<launcher>``: the options of one launcher."""
        return dict(self.launcher_options.get(launcher) or {})

    @classmethod
    def from_cfg(cls, c: Mapping) -> "FinetuneSettings":
        from mafl.finetune.mixing import MixSettings

        from mafl.finetune.launchers.registered import LAUNCHERS
        from mafl.finetune.rewards import check_reward, get_reward

        p = "finetune"
        own = [f.name for f in fields(cls) if f.name != "launcher_options"]
        known_keys(c, p, own + LAUNCHERS.names())
        train = dict(c.get("train") or {})
        reward, reward_kwargs = check_reward(c.get("reward", "majority"), plain(c.get("reward_kwargs")))
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
            launcher=_launcher(c.get("launcher", "local")),
            resources=_resources(c.get("resources")),
            max_retries=integer({"max_retries": c.get("max_retries", 2)}, "max_retries", p, low=0),
            launcher_options={name: dict(plain(c.get(name)) or {}) for name in LAUNCHERS.names() if c.get(name)},
            accelerate=_accelerate(c.get("accelerate")),
            objective=choice(c, "objective", p, OBJECTIVES) if c.get("objective") is not None else None,
            max_pairs=integer(c, "max_pairs", p, low=1, none_ok=True),
            dpo=dict(plain(c.get("dpo")) or {}),
            reward=reward,
            reward_kwargs=reward_kwargs,
            max_prompts=integer(c, "max_prompts", p, low=1, none_ok=True),
            grpo=get_reward(reward).grpo_settings(plain(c.get("grpo"))),
        )

    def check_arguments(self) -> None:
        """``lora``, ``train``, ``dpo`` and ``grpo`` are passed straight to peft's ``LoraConfig``, trl's
        ``SFTConfig``, ``DPOConfig`` and ``GRPOConfig``: a key that is not one of their arguments is refused now
        rather than at the first fine-tune (imports peft and trl); with objective grpo, ``grpo`` must also make a
        ``GRPOConfig`` (trl's own checks: the generation batch a multiple of ``num_generations``, ...)."""
        import dataclasses

        from peft import LoraConfig
        from trl import DPOConfig, GRPOConfig, SFTConfig

        for key, cls, values in (("lora", LoraConfig, self.lora), ("train", SFTConfig, self.train),
                                 ("dpo", DPOConfig, self.dpo), ("grpo", GRPOConfig, self.grpo)):
            known_keys(values, f"finetune.{key}", [f.name for f in dataclasses.fields(cls) if f.init],
                       what=f"not an argument of {cls.__module__.split('.')[0]} {cls.__name__}")
        if self.uses_prompts and self.iterations:
            _check_grpo(self.grpo)
        if self.accelerate is not None:
            _check_accelerate(self.accelerate)


def _check_accelerate(cfg: dict) -> None:
    """A one-line error for an accelerate config that cannot launch anything (accelerate checks the rest)."""
    if "num_processes" in cfg:
        integer(cfg, "num_processes", "finetune.accelerate", low=1)
    if "distributed_type" in cfg and not isinstance(cfg["distributed_type"], str):
        raise ConfigError(f"finetune.accelerate.distributed_type: must be a name such as MULTI_GPU, FSDP, DEEPSPEED "
                          f"(got {cfg['distributed_type']!r})")


def _check_grpo(grpo: dict) -> None:
    """A one-line error for ``finetune.grpo`` values that trl's ``GRPOConfig`` refuses (checked on one CPU process;
    a multi-process fine-tune multiplies the generation batch by its processes)."""
    import tempfile

    from mafl.finetune.grpo import grpo_config

    with tempfile.TemporaryDirectory() as d:
        try:
            grpo_config({**grpo, "use_vllm": False}, d, 0, "cpu", "float32")
        except (ValueError, TypeError) as e:
            from mafl.errors import one_line

            raise ConfigError(f"finetune.grpo: {one_line(e)}") from None


def _launcher(name) -> str:
    from mafl.finetune.launchers.registered import LAUNCHERS

    if name not in LAUNCHERS:
        LAUNCHERS.load(name)  # a "module:Class" outside the registry, or a ConfigError listing the registered ones
    return str(name)


def _resources(value) -> dict:
    """``finetune.resources``: ``num_cpus`` and ``num_gpus`` of one fine-tune (numbers >= 0, or null)."""
    resources = dict(plain(value) or {})
    known_keys(resources, "finetune.resources", ("num_cpus", "num_gpus"))
    for key in resources:
        number(resources, key, "finetune.resources", low=0.0, none_ok=True)
    return resources


def _accelerate(value) -> dict | None:
    """``finetune.accelerate``: an accelerate config as a mapping, or read from a YAML file."""
    if value is None:
        return None
    value = plain(value)
    if isinstance(value, str):
        from pathlib import Path

        import yaml

        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"finetune.accelerate: no such file {value}")
        value = yaml.safe_load(path.read_text())
    if not isinstance(value, dict):
        raise ConfigError(f"finetune.accelerate: must be an accelerate config (a mapping or a YAML file), "
                          f"got {value!r}")
    return value
