"""GRPO of one model of the society on its prompts (:mod:`mafl.finetune.rl_prompts`) with trl's ``GRPOTrainer``.

For every prompt the model being trained samples a group of ``num_generations`` completions, the reward
(:mod:`mafl.finetune.rewards`, ``finetune.reward``) scores each, and the policy moves towards the completions that
score above their group's mean. Prompts are tokenized by mafl, not trl: :func:`mafl.backends.chat.prompt_ids`, the
function the backends generate from, so the model is trained on exactly the tokens it answers in the debate. A
completion that ends without eos was cut off by ``max_completion_length`` and earns 0 (trl's own test of truncation:
the last token is not eos or pad).

``grpo`` holds trl ``GRPOConfig`` arguments, passed straight through (``num_generations``,
``max_completion_length``, ``temperature``, ``beta``, ``learning_rate``, ``use_vllm``, ...); mafl only fills in
what a user did not set, as for SFT and DPO (:func:`mafl.finetune.trl_shared.trainer_defaults`). ``use_vllm: null``
means: on a GPU where vLLM is installed, generation inside training goes through trl's vLLM (``vllm_mode:
colocate`` by default, in the training process); on CPU, or without vLLM, through transformers' ``generate``.

With ``beta > 0`` the KL penalty's reference is the weights the fine-tune starts from (trl's choice, as for DPO: a
new adapter's is the base model, a continued adapter's a frozen copy named ``ref``, deleted before saving).

The trainer records every group it scored (:class:`GroupRecorder`): ``grpo_metrics`` of the result are the groups,
the share whose rewards differ at all (a group of equal rewards has no advantage: GRPO learns nothing from it) and
the mean reward, first and last optimizer step too.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Mapping

from mafl.errors import plain


def grpo_arguments(grpo: Mapping | None, output_dir: Path, seed: int, device: str, dtype: str) -> dict:
    """trl ``GRPOConfig`` keyword arguments: ``grpo`` with mafl's defaults filled in and ``use_vllm`` decided."""
    from mafl.finetune.trl_shared import trainer_defaults

    kwargs = trainer_defaults(dict(plain(grpo) or {}), output_dir, seed, device, dtype)
    if kwargs.get("use_vllm") is None:
        kwargs["use_vllm"] = device.startswith("cuda") and importlib.util.find_spec("vllm") is not None
    return kwargs


def grpo_config(grpo: Mapping | None, output_dir: Path, seed: int, device: str, dtype: str):
    from trl import GRPOConfig

    return GRPOConfig(**grpo_arguments(grpo, output_dir, seed, device, dtype))


class GroupRecorder:
    """trl's reward function: the reward of every completion (:func:`mafl.finetune.rewards.score`), and a record of
    each group of ``num_generations`` completions of one prompt (trl lays them out one group after another) with the
    optimizer step it was scored at."""

    def __init__(self, reward, task, kwargs: Mapping, num_generations: int):
        self.reward, self.task, self.kwargs, self.num_generations = reward, task, dict(kwargs), num_generations
        self.__name__ = reward.name  # trl's name of the reward in its logs
        self.stop_ids: set[int] = set()  # eos and pad (set by the trainer): a completion ending otherwise was cut off
        self.groups: list[dict] = []

    def __call__(self, prompts, completions, completion_ids, target, earlier_agreed, trainer_state=None, **_):
        from mafl.finetune.rewards import score

        rewards = []
        for completion, ids, tgt, earlier in zip(completions, completion_ids, target, earlier_agreed):
            text = completion[0]["content"] if isinstance(completion, list) else completion
            finished = bool(ids) and ids[-1] in self.stop_ids
            rewards.append(score(self.reward, self.task, text, finished, {"target": tgt, "earlier_agreed": earlier},
                                 self.kwargs))
        step = int(trainer_state.global_step) if trainer_state is not None else 0
        g = self.num_generations
        for i in range(0, len(rewards), g):
            self.groups.append({"step": step, "rewards": rewards[i:i + g]})
        return rewards


def group_metrics(groups: list[dict]) -> dict:
    """``groups`` (:class:`GroupRecorder`) summed up: how many, the share whose rewards vary, the mean reward (of
    all, and of the first and last step's groups)."""
    if not groups:
        return {"groups": 0, "share_with_variance": None, "mean_reward": None}

    def mean_reward(gs):
        values = [r for g in gs for r in g["rewards"]]
        return sum(values) / len(values)

    first, last = min(g["step"] for g in groups), max(g["step"] for g in groups)
    return {"groups": len(groups),
            "share_with_variance": sum(len(set(g["rewards"])) > 1 for g in groups) / len(groups),
            "mean_reward": mean_reward(groups),
            "mean_reward_first_step": mean_reward([g for g in groups if g["step"] == first]),
            "mean_reward_last_step": mean_reward([g for g in groups if g["step"] == last])}


def _mafl_tokenized_class():
    from trl import GRPOTrainer

    from mafl.backends.chat import prompt_ids

    class PromptTokenizedGRPOTrainer(GRPOTrainer):
        """trl's GRPOTrainer whose prompts are tokenized as mafl's backends tokenize them (see the module doc)."""

        def _tokenize_prompts(self, prompts: list):
            return [prompt_ids(self._tokenizer, p) for p in prompts], None, {}

    return PromptTokenizedGRPOTrainer


def build_grpo_trainer(base_path: str, prompts, work_dir: Path, *, task, reward: str = "majority",
                       reward_kwargs: Mapping | None = None, mode: str = "lora", lora: Mapping | None = None,
                       grpo: Mapping | None = None, init_adapter: str | None = None, seed: int = 0,
                       device: str = "cpu", dtype: str = "float32", chat_template: str | None = None, model=None):
    """The ready-to-train ``GRPOTrainer`` on ``prompts`` (a PromptSet or its records); ``model``: the base model
    already loaded (LoRA only). Its ``recorder`` holds the scored groups. Raises ValueError when no prompt is given."""
    import datasets
    from transformers import PrinterCallback

    from mafl.finetune.rewards import get_reward
    from mafl.finetune.trl_shared import policy, quiet, recording_trainer_class
    from mafl.models import resolve_device

    records = prompts.records() if hasattr(prompts, "records") else [dict(p) for p in prompts]
    if not records:
        raise ValueError("no prompts to train on")
    rew = get_reward(reward)
    with quiet():
        args = grpo_config(rew.grpo_settings(grpo), work_dir, seed, resolve_device(device), dtype)
        model, tokenizer, peft_config = policy(base_path, mode=mode, lora=lora, init_adapter=init_adapter,
                                               seed=seed, dtype=dtype, chat_template=chat_template, model=model)
        recorder = GroupRecorder(rew, task, rew.settings(reward_kwargs), args.num_generations)
        trainer = recording_trainer_class(_mafl_tokenized_class())(
            model=model, reward_funcs=[recorder], args=args, train_dataset=datasets.Dataset.from_list(records),
            processing_class=tokenizer, peft_config=peft_config)
    recorder.stop_ids = {*trainer.eos_token_ids, tokenizer.pad_token_id} - {None}
    if args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)
    trainer.recorder = recorder
    return trainer
