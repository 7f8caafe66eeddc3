"""The rewards of GRPO fine-tuning (``finetune.reward``), one small function each, registered next to each other.

Every reward scores one sampled completion of one prompt (:mod:`mafl.finetune.rl_prompts`) by the answer it states.
A prompt carries its ``target``: the answer the reward compares to. For ``majority`` and ``correction`` the target is
the society's strict-majority answer of the problem in the debate (the label the SFT sets use; problems without one
give no prompts), never the gold answer; only ``gold`` (``Reward.reads_gold``) takes the gold answer as its target,
the RLVR baseline, and every report marks it so. A completion cut off by the token budget, or one whose answer cannot
be read, earns 0 whatever the reward.

* ``majority``: 1 when the completion's answer is equivalent to the label (``task.is_equivalent``: 4 and 4.0 are
  one answer), else 0.
* ``gold``: 1 when it is equivalent to the gold answer, else 0.
* ``correction`` (critics): ``majority`` plus ``bonus`` (``finetune.reward_kwargs.bonus``, default 1.0) when the
  completion agrees with the label and the critic's own earlier (round-1) answer did not: the D- move, wrong to
  right, that the critics' SFT sets favour. A generator's prompt has no earlier answer: there it is ``majority``.

The bonus is a constant within a prompt's group (the critic's earlier answer does not depend on the completion), so it
can only weigh D- prompts above D+ ones, and trl's default ``scale_rewards: group`` (each group scaled to unit
variance) would cancel it: ``correction`` trains with ``finetune.grpo.scale_rewards: batch`` (one scale for the
generation batch: a D- group's advantages are ``1 + bonus`` times a D+ group's) unless set to ``none``; ``group`` is
refused (:meth:`Reward.grpo_settings`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from mafl.errors import ConfigError, known_keys, number
from mafl.registry import Registry
from mafl.tasks.base import Task

LABEL, GOLD = "label", "gold"  # where a reward's target comes from: the debate's majority, or the gold answer


@dataclass(frozen=True)
class Reward:
    name: str
    score: Callable  # (agrees: bool, prompt row, **kwargs) -> float, for a completion whose answer was read
    target: str = LABEL  # LABEL | GOLD
    kwargs: Mapping | None = None  # the finetune.reward_kwargs it takes, with their defaults
    scale_rewards: str | None = None  # the trl scale_rewards it trains with (None: any, trl's default group)

    @property
    def reads_gold(self) -> bool:
        return self.target == GOLD

    @property
    def shown(self) -> str:
        """The reward's name as reports show it: one that reads the gold answer says so."""
        return f"{self.name} (reads the gold answer)" if self.reads_gold else self.name

    def settings(self, kwargs: Mapping | None) -> dict:
        """``finetune.reward_kwargs`` checked: only the reward's own keys, numbers; its defaults filled in."""
        given = dict(kwargs or {})
        known_keys(given, "finetune.reward_kwargs", list(self.kwargs or {}),
                   what=f"not an argument of reward {self.name}")
        for key in given:
            number(given, key, "finetune.reward_kwargs")
        return {**dict(self.kwargs or {}), **given}

    def grpo_settings(self, grpo: Mapping | None) -> dict:
        """``finetune.grpo`` for this reward: its ``scale_rewards`` where a user set none; a group scaling, which
        would cancel a reward that is constant within a group, refused in one line."""
        grpo = dict(grpo or {})
        if self.scale_rewards is None:
            return grpo
        if "scale_rewards" not in grpo:
            grpo["scale_rewards"] = self.scale_rewards
        elif grpo["scale_rewards"] is True or grpo["scale_rewards"] == "group":
            raise ConfigError(f"finetune.grpo.scale_rewards: {grpo['scale_rewards']!r} scales each prompt's group to "
                              f"unit variance, which cancels reward {self.name}'s bonus (a constant within a group); "
                              f"use batch or none")
        return grpo


def agreement(agrees: bool, row: Mapping) -> float:
    """``majority`` and ``gold``: 1 when the answer is equivalent to the prompt's target, else 0."""
    return 1.0 if agrees else 0.0


def correction(agrees: bool, row: Mapping, bonus: float = 1.0) -> float:
    """``agreement`` plus ``bonus`` for a D- move: the critic's own round-1 answer differed from the label."""
    moved = agrees and row.get("earlier_agreed") is False
    return agreement(agrees, row) + (bonus if moved else 0.0)


REWARDS: Registry[Reward] = Registry("reward", "finetune.reward")
for _reward in (Reward("majority", agreement), Reward("gold", agreement, target=GOLD),
                Reward("correction", correction, kwargs={"bonus": 1.0}, scale_rewards="batch")):
    REWARDS.register(_reward.name, _reward)


def get_reward(name: str) -> Reward:
    return REWARDS.get(name)


def score(reward: Reward, task: Task, text: str, finished: bool, row: Mapping, kwargs: Mapping | None = None) -> float:
    """The reward of one completion ``text`` of the prompt ``row`` (its ``target``, and ``earlier_agreed`` for a
    critic): 0 when it was cut off (``finished`` false) or states no answer that can be read."""
    answer = task.extract_answer(text) if finished else None
    if answer is None:
        return 0.0
    return float(reward.score(task.is_equivalent(answer, row["target"]), row, **dict(kwargs or {})))


def check_reward(name, kwargs) -> tuple[str, dict]:
    """``finetune.reward`` and ``finetune.reward_kwargs``: a registered reward and its own arguments."""
    if not isinstance(name, str):
        raise ConfigError(f"finetune.reward: must be one of {', '.join(REWARDS.names())} (got {name!r})")
    return name, get_reward(name).settings(kwargs)
