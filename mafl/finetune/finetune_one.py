"""Fine-tune one model of the society (one job; what SFT, DPO and GRPO share is mafl/finetune/trl_shared.py) on
its set with trl's ``SFTTrainer`` (LoRA adapter or full weights), on its preference pairs with trl's
``DPOTrainer``, or by reinforcement learning on its prompts with trl's ``GRPOTrainer`` (``objective``: sft | dpo |
sft+dpo | grpo; the DPO side is :mod:`mafl.finetune.dpo`, the GRPO side :mod:`mafl.finetune.grpo`).

The set is given to trl pre-tokenized: each example's ``input_ids`` and ``completion_mask`` come from
:func:`mafl.backends.chat.example_ids`, the function the backends use to tokenize prompts, so a model is trained on
exactly the prompt tokens it will generate from (its whole conversation, rendered with the generation prompt), then
the response's tokens and eos. trl 1.16 reads a dataset with an ``input_ids`` column as tokenized, turns the
``completion_mask`` into labels (-100 on every prompt token) when ``completion_only_loss`` is on (mafl turns it on
unless ``train`` says otherwise) and pads on the right. An example longer than ``max_length`` tokens is left out
(trl would cut it from the right, losing the response it is trained to give) and counted (``examples_too_long`` in
the fine-tune's record, with a warning).

``lora`` holds peft ``LoraConfig`` arguments and ``train`` trl ``SFTConfig`` arguments, both passed straight
through. mafl only fills in what a user did not set: ``output_dir`` (a temporary folder, deleted afterwards),
``use_cpu`` (from ``device``), ``report_to="none"``, ``disable_tqdm=True``, ``bf16``/``fp16`` from ``dtype`` (trl
would otherwise default to bf16 autocast), ``save_strategy="no"`` and ``completion_only_loss=True``; ``seed`` always
comes from the argument (:func:`mafl.finetune.trl_shared.trainer_defaults`, for DPO too).

``sft+dpo`` is two stages in one job: SFT on the set into a hidden stage folder, then DPO on the pairs starting from
(and referenced to) that result; the record keeps the SFT stage's result under ``sft``. A model with nothing to
train on keeps its init weights, whatever the objective.

Output is atomic: everything is written into a hidden temporary folder next to ``out_dir`` and renamed onto it at
the end, so a killed fine-tune never leaves a half-written model. LoRA mode saves only the adapter
(``save_pretrained``); full mode saves the whole model and its tokenizer. Both also write ``finetune_result.json``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Mapping

from mafl.errors import plain
from mafl.finetune.jobs import FinetuneJob
from mafl.finetune.sets import Example, FinetuneSet
from mafl.finetune.trl_shared import load_model, policy, quiet, recording_trainer_class, trainer_defaults
from mafl.models import resolve_device
from mafl.rundir import atomic_folder
from mafl.model_weights import tiny_weights

RESULT_FILE = "finetune_result.json"
MODES = ("lora", "full")  # a LoRA adapter per model, or the whole model
# what each model is trained on: its set (trl SFTTrainer), its preference pairs (trl DPOTrainer), the set then the
# pairs, or completions it samples for its prompts, scored by a reward (trl GRPOTrainer)
OBJECTIVES = ("sft", "dpo", "sft+dpo", "grpo")


@dataclass
class FinetuneResult:
    out_dir: Path
    mode: str
    num_examples: int
    trained: bool  # False when there were no examples: out_dir then holds the init weights, unchanged
    losses: list[float] = field(default_factory=list)  # training loss of every optimizer step
    log_history: list[dict] = field(default_factory=list)  # the trainer's own logs (every logging_steps)
    train_runtime: float = 0.0  # seconds
    global_step: int = 0
    init: str | None = None  # the adapter / model folder training started from (None: the base model)
    processes: int = 1  # the processes that trained it (finetune.accelerate)
    distributed: str = "NO"  # accelerate's distributed type of the trainer (NO, MULTI_GPU, MULTI_CPU, FSDP, ...)
    # the FSDP / DeepSpeed settings `accelerate launch` gave the processes (its environment variables), if any
    launch_settings: dict = field(default_factory=dict)
    base: str | None = None  # the base model it was fine-tuned from (mafl.models.check_weights_base reads it)
    base_weights: str | None = None  # the sha256 of that base's weights where mafl built it (the tiny model)
    objective: str = "sft"  # sft | dpo | sft+dpo | grpo (finetune.objective)
    num_pairs: int = 0  # the preference pairs it was given (dpo, sft+dpo)
    pairs_too_long: int = 0  # pairs dropped because their prompt alone reaches max_length
    examples_too_long: int = 0  # examples left out because they are longer than max_length (sft)
    dpo_metrics: dict = field(default_factory=dict)  # DPO: reward accuracies, margins, ... (mafl.finetune.dpo)
    sft: dict | None = None  # sft+dpo: the result of the SFT stage that the DPO stage started from
    num_prompts: int = 0  # grpo: the prompts it was given
    reward: str | None = None  # grpo: finetune.reward
    reads_gold: bool = False  # grpo: its reward compares to the gold answer (RLVR), not the society's majority
    grpo_metrics: dict = field(default_factory=dict)  # grpo: groups scored, share with reward variance, mean reward

    def to_json(self) -> dict:
        return {**asdict(self), "out_dir": str(self.out_dir)}


def _records(examples: FinetuneSet | list) -> list[dict]:
    """Conversational prompt-completion records (``Example.to_json`` form): the prompt's messages and one assistant
    message."""
    items = examples.examples if isinstance(examples, FinetuneSet) else list(examples)
    out = []
    for e in items:
        if isinstance(e, Example):
            e = e.to_json()
        completion = [dict(m) for m in e["completion"]]
        if len(completion) != 1 or completion[0].get("role") != "assistant":
            raise ValueError(f"an example's completion must be one assistant message, got {completion!r}")
        out.append({"prompt": [dict(m) for m in e["prompt"]], "completion": completion})
    return out


def tokenized(records: list[dict], tokenizer, max_length: int | None = None) -> tuple[list[dict], int]:
    """The rows trl trains on (``input_ids`` and ``completion_mask`` of every record, see the module docstring), and
    how many records were left out because they are longer than ``max_length`` tokens: trl would cut them from the
    right, and so cut (or drop) the response they are trained to give while the loss still counted them as
    examples."""
    from mafl.backends.chat import example_ids

    rows, too_long = [], 0
    for r in records:
        ids, mask = example_ids(tokenizer, r["prompt"], r["completion"][0]["content"])
        if max_length is not None and len(ids) > max_length:
            too_long += 1
            continue
        rows.append({"input_ids": ids, "completion_mask": mask})
    return rows, too_long


def _sft_config(train: Mapping | None, output_dir: Path, seed: int, device: str, dtype: str):
    from trl import SFTConfig

    kwargs = trainer_defaults(dict(plain(train) or {}), output_dir, seed, device, dtype)
    if kwargs.get("completion_only_loss") is None:  # trl's default would train pre-tokenized rows on every token
        kwargs["completion_only_loss"] = True
    return SFTConfig(**kwargs)


def build_trainer(base_path: str, examples: FinetuneSet | list, work_dir: Path, *, mode: str = "lora",
                  lora: Mapping | None = None, train: Mapping | None = None, init_adapter: str | None = None,
                  seed: int = 0, device: str = "cpu", dtype: str = "float32", chat_template: str | None = None,
                  model=None):
    """The ready-to-train ``SFTTrainer`` (its dataset already tokenized, labels masked); ``work_dir`` receives the
    trainer's own output. ``model``: the base model already loaded (LoRA only; see :class:`SharedBase`). Exposed
    so tests can inspect the tokenized data and the collated batches."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    records = _records(examples)
    if not records:
        raise ValueError("no examples to train on")
    with quiet():
        return _build_trainer(base_path, records, work_dir, mode=mode, lora=lora, train=train,
                              init_adapter=init_adapter, seed=seed, device=resolve_device(device), dtype=dtype,
                              chat_template=chat_template, model=model)


def _build_trainer(base_path, records, work_dir, *, mode, lora, train, init_adapter, seed, device, dtype,
                   chat_template, model=None):
    import datasets
    from transformers import PrinterCallback
    from trl import SFTTrainer

    model, tokenizer, peft_config = policy(base_path, mode=mode, lora=lora, init_adapter=init_adapter, seed=seed,
                                           dtype=dtype, chat_template=chat_template, model=model)
    args = _sft_config(train, work_dir, seed, device, dtype)
    rows, too_long = tokenized(records, tokenizer, args.max_length)
    if not rows:
        raise ValueError(f"every example is longer than finetune.train.max_length={args.max_length} tokens (its "
                         "response would be cut): raise max_length")
    if too_long:
        logging.getLogger("mafl").warning("%d of %d examples are longer than max_length=%d tokens and are left out "
                                          "(cut, their responses would be lost)", too_long, len(records),
                                          args.max_length)
    trainer = recording_trainer_class(SFTTrainer)(
        model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    if args.disable_tqdm:  # with tqdm off, transformers prints every log dict instead
        trainer.remove_callback(PrinterCallback)
    trainer.examples_too_long = too_long
    return trainer


def _stage_callback(shown):
    """A trainer callback that counts optimizer steps on the console's stage ``shown``."""
    from transformers import TrainerCallback

    class StageCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            shown.set_total(state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            shown.update(1)

    return StageCallback()


def _keep_init(job: FinetuneJob, tmp: Path) -> None:
    """No examples: the job's folder gets its init weights (the init adapter, a fresh identity adapter, or the
    model)."""
    if job.mode == "lora" and job.init is not None:
        shutil.copytree(job.init, tmp, dirs_exist_ok=True)
        (tmp / RESULT_FILE).unlink(missing_ok=True)
        return
    src = job.init if (job.mode == "full" and job.init is not None) else job.base_path
    model, tokenizer = load_model(src, job.dtype, job.chat_template)
    if job.mode == "full":
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        return
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(job.seed)
    get_peft_model(model, LoraConfig(**dict(plain(job.lora) or {}))).save_pretrained(tmp)  # lora_B = 0: the base model's outputs


class SharedBase:
    """The base model loaded once and lent to one LoRA fine-tune at a time, so the 2N fine-tunes of an iteration
    do not each load it from disk. A LoRA fine-tune never changes the base weights: peft injects its layers into
    the model, and :meth:`lend` takes them out again afterwards (``unload``, no merge), turns gradient
    checkpointing and the input-gradient hook off and restores ``use_cache``. A model that cannot be cleaned (a
    fine-tune that failed half-way) is dropped and loaded again on the next loan.

    ``model``: an already loaded model to lend (e.g. the generation backend's), instead of loading it."""

    def __init__(self, path: str, dtype: str = "float32", chat_template: str | None = None, model=None):
        self.path, self.dtype, self.chat_template = path, dtype, chat_template
        self.model = model
        self.loads = 0  # how often the model was read from disk (0 when one was given)

    def matches(self, path: str, dtype: str, chat_template: str | None) -> bool:
        return (self.path, self.dtype, self.chat_template) == (path, dtype, chat_template)

    @contextlib.contextmanager
    def lend(self):
        """The base model, clean (no LoRA layers); cleaned again when the block ends."""
        if self.model is None:
            self.model, _ = load_model(self.path, self.dtype, self.chat_template)
            self.loads += 1
        use_cache = getattr(self.model.config, "use_cache", None)
        try:
            yield self.model
        finally:
            if not _restore(self.model, use_cache):
                self.model = None

    def close(self) -> None:
        self.model = None


def _restore(model, use_cache) -> bool:
    """Undo what a LoRA fine-tune did to the base ``model``; False when LoRA layers are still in it."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    new_names = hasattr(type(model), "is_activation_checkpointing")  # transformers >= 5.x renamed them
    if getattr(model, "is_activation_checkpointing" if new_names else "is_gradient_checkpointing", False):
        (model.activation_checkpointing_disable if new_names else model.gradient_checkpointing_disable)()
    if hasattr(model, "_require_grads_hook"):
        model.disable_input_require_grads()
    if use_cache is not None:
        model.config.use_cache = use_cache
    model.eval()
    return not any(isinstance(m, BaseTunerLayer) for m in model.modules())


def job_data(job: FinetuneJob):
    """(examples, pairs, prompts) of ``job``: its set, its preference pairs and its GRPO prompts (None without a
    pairs or prompts file), read from their files."""
    from mafl.finetune.pairs import PairSet
    from mafl.finetune.rl_prompts import PromptSet

    pairs = PairSet.load(job.pairs_path, name=job.model) if job.pairs_path else None
    prompts = PromptSet.load(job.prompts_path, name=job.model) if job.prompts_path else None
    return FinetuneSet.load(job.set_path, name=job.model), pairs, prompts


def finetune_model(base_path: str, examples: FinetuneSet | list, out_dir: str | os.PathLike, *, mode: str = "lora",
                   lora: Mapping | None = None, train: Mapping | None = None, init_adapter: str | None = None,
                   seed: int = 0, device: str = "cpu", dtype: str = "float32",
                   chat_template: str | None = None, desc: str | None = None,
                   base: SharedBase | None = None, objective: str = "sft", pairs=None,
                   dpo: Mapping | None = None, prompts=None, grpo: Mapping | None = None,
                   reward: str | None = None, reward_kwargs: Mapping | None = None, task=None) -> FinetuneResult:
    """Fine-tune ``base_path`` (LoRA: a new adapter, or ``init_adapter`` continued; full: the model itself, or the
    full model in ``init_adapter``) on ``examples`` and write the result atomically to ``out_dir``.

    ``objective``: ``sft`` trains on ``examples`` (trl SFTTrainer); ``dpo`` on the preference ``pairs`` (a
    :class:`~mafl.finetune.pairs.PairSet` or a list; trl DPOTrainer with the ``dpo`` arguments, see
    :mod:`mafl.finetune.dpo`); ``sft+dpo`` on ``examples`` first, then on ``pairs`` from the SFT result (which is
    then also the DPO reference); ``grpo`` on the ``prompts`` (a :class:`~mafl.finetune.rl_prompts.PromptSet`), with
    ``grpo`` (trl GRPOConfig arguments), ``reward``, ``reward_kwargs`` and ``task`` (the task, or its name and
    options, which reads the completions' answers; see :mod:`mafl.finetune.grpo`). With nothing to train on,
    nothing is trained and ``out_dir`` gets the init weights (``trained=False``). The fine-tune is one stage of the
    console (``desc``, default ``fine-tune <out_dir's name>``), counting optimizer steps. ``base``: LoRA on the base
    model that ``base`` lends (loaded once for many fine-tunes) instead of a fresh copy; the same seed gives the
    same adapter either way.

    The settings travel as one :class:`~mafl.finetune.jobs.FinetuneJob` (its data given here in memory, so its
    file paths stay empty): :func:`finetune_job` is the same for a job whose set, pairs and prompts are files."""
    name = examples.name if isinstance(examples, FinetuneSet) else Path(out_dir).name
    job = FinetuneJob(model=name, set_path="", out_dir=str(out_dir), init=init_adapter, seed=seed,
                      base_path=str(base_path), mode=mode, lora=dict(plain(lora) or {}),
                      train=dict(plain(train) or {}), device=device, dtype=dtype, chat_template=chat_template,
                      desc=desc, objective=objective, dpo=dict(plain(dpo) or {}), grpo=dict(plain(grpo) or {}),
                      reward=reward, reward_kwargs=dict(plain(reward_kwargs) or {}), task=task)
    return finetune_job(job, examples, pairs, prompts, base=base)


def finetune_job(job: FinetuneJob, examples: FinetuneSet | list, pairs=None, prompts=None, *,
                 base: SharedBase | None = None) -> FinetuneResult:
    """Fine-tune ``job`` on ``examples`` (``pairs``, ``prompts``) in this process, its weights written atomically to
    its ``out_dir`` (see :func:`finetune_model`)."""
    from mafl.progress import stage

    if job.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {job.mode!r}")
    if job.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {job.objective!r}")
    if base is not None and (job.mode != "lora" or not base.matches(job.base_path, job.dtype, job.chat_template)):
        base = None  # full fine-tuning changes the model; another base model cannot be lent
    out_dir = Path(job.out_dir)
    with stage(job.desc or f"fine-tune {out_dir.name}", unit="step") as shown:
        with atomic_folder(out_dir) as tmp:
            return train_into(tmp, job, examples, pairs, prompts, shown=shown, base=base)


def train_into(folder: Path, job: FinetuneJob, examples, pairs=None, prompts=None, *, shown=None,
               base: SharedBase | None = None) -> FinetuneResult:
    """Fine-tune ``job`` and save the weights and ``finetune_result.json`` into ``folder`` (which becomes its
    ``out_dir``). Run by every process of a multi-process (``accelerate launch``) fine-tune: all of them train, the
    main one writes (FSDP and DeepSpeed gather the weights through the trainer's own ``save_model``)."""
    num_pairs = len(pairs) if pairs is not None else 0
    if job.objective == "sft" or (job.objective == "sft+dpo" and not num_pairs):
        result, main = _sft_into(folder, job, examples, shown=shown, base=base)
    elif job.objective == "dpo":
        result, main = _dpo_into(folder, job, pairs, shown=shown, base=base)
    elif job.objective == "grpo":
        result, main = _grpo_into(folder, job, prompts, shown=shown, base=base)
    else:  # sft+dpo: SFT into a stage folder (the same path in every process), then DPO from it into `folder`
        stage_dir = folder.parent / f"{folder.name}.sft"
        try:
            sft, _ = _sft_into(stage_dir, job, examples, shown=shown, base=base)
            result, main = _dpo_into(folder, replace(job, init=str(stage_dir)), pairs, shown=shown, base=base)
            result.sft, result.init, result.num_examples = sft.to_json(), job.init, sft.num_examples
        finally:
            shutil.rmtree(stage_dir, ignore_errors=True)
    result.objective, result.num_pairs = job.objective, num_pairs if job.objective != "grpo" else 0
    result.base_weights = tiny_weights(job.base_path)
    if main:
        (folder / RESULT_FILE).write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
    return result


def _trainer_arguments(job: FinetuneJob) -> dict:
    """What :func:`build_trainer` and :func:`~mafl.finetune.dpo.build_dpo_trainer` take from a job."""
    return dict(mode=job.mode, lora=job.lora, init_adapter=job.init, seed=job.seed, device=job.device,
                dtype=job.dtype, chat_template=job.chat_template)


def _sft_into(folder: Path, job: FinetuneJob, examples, *, shown, base) -> tuple[FinetuneResult, bool]:
    """SFT into ``folder``; (result, whether this process is the main one)."""
    num_examples = len(_records(examples))
    result = FinetuneResult(out_dir=Path(job.out_dir), mode=job.mode, num_examples=num_examples, trained=False,
                            init=job.init, base=job.base_path)
    if num_examples == 0:
        with quiet():
            _keep_init(job, folder)
        return result, True

    def build(lent, work):
        trainer = build_trainer(job.base_path, examples, work, train=job.train, model=lent, **_trainer_arguments(job))
        result.examples_too_long = trainer.examples_too_long
        return trainer

    return result, _train(folder, result, build, shown=shown, base=base)


def _dpo_into(folder: Path, job: FinetuneJob, pairs, *, shown, base) -> tuple[FinetuneResult, bool]:
    """DPO into ``folder``; (result, whether this process is the main one)."""
    from mafl.finetune.dpo import build_dpo_trainer

    result = FinetuneResult(out_dir=Path(job.out_dir), mode=job.mode, num_examples=0, trained=False, init=job.init,
                            base=job.base_path, objective="dpo", num_pairs=len(pairs) if pairs is not None else 0)
    if not result.num_pairs:
        with quiet():
            _keep_init(job, folder)
        return result, True

    def build(lent, work):
        trainer = build_dpo_trainer(job.base_path, pairs, work, dpo=job.dpo, model=lent, **_trainer_arguments(job))
        result.pairs_too_long = trainer.pairs_too_long
        return trainer

    return result, _train(folder, result, build, shown=shown, base=base)


def _grpo_into(folder: Path, job: FinetuneJob, prompts, *, shown, base) -> tuple[FinetuneResult, bool]:
    """GRPO into ``folder``; (result, whether this process is the main one)."""
    from mafl.finetune.grpo import build_grpo_trainer, group_metrics
    from mafl.finetune.rewards import get_reward
    from mafl.tasks import task_from_config

    reward = job.reward or "majority"
    result = FinetuneResult(out_dir=Path(job.out_dir), mode=job.mode, num_examples=0, trained=False, init=job.init,
                            base=job.base_path, objective="grpo", reward=reward,
                            num_prompts=len(prompts) if prompts is not None else 0,
                            reads_gold=get_reward(reward).reads_gold)
    if not result.num_prompts:
        with quiet():
            _keep_init(job, folder)
        return result, True
    task = task_from_config(job.task) if isinstance(job.task, Mapping) else job.task
    trainers = []

    def build(lent, work):
        trainers.append(build_grpo_trainer(job.base_path, prompts, work, task=task, reward=reward,
                                           reward_kwargs=job.reward_kwargs, grpo=job.grpo, model=lent,
                                           **_trainer_arguments(job)))
        return trainers[-1]

    main = _train(folder, result, build, shown=shown, base=base)
    result.grpo_metrics = group_metrics(trainers[-1].recorder.groups)
    return result, main


def _train(folder: Path, result: FinetuneResult, build, *, shown, base) -> bool:
    """Train the trainer that ``build(lent base model or None, work folder)`` makes, record it in ``result`` and save
    the weights into ``folder``; returns whether this process is the main one."""
    from mafl.finetune.dpo import dpo_metrics, drop_reference

    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{result.out_dir.name}.trainer-"))
    try:
        with base.lend() if base is not None else contextlib.nullcontext() as lent:
            trainer = build(lent, work)
            if shown is not None:
                trainer.add_callback(_stage_callback(shown))
            start = time.perf_counter()
            output = trainer.train()
            result.trained = True
            result.train_runtime = float(output.metrics.get("train_runtime", time.perf_counter() - start))
            result.global_step = int(trainer.state.global_step)
            result.losses = trainer.finish_step_losses()
            result.log_history = [dict(h) for h in trainer.state.log_history]
            if result.objective == "dpo":
                result.dpo_metrics = dpo_metrics(result.log_history)
            result.processes = int(trainer.accelerator.num_processes)
            result.distributed = str(trainer.accelerator.distributed_type.value)
            result.launch_settings = {k: v for k, v in os.environ.items()
                                      if k.startswith(("ACCELERATE_USE_", "FSDP_", "ACCELERATE_DEEPSPEED_", "MASTER_PORT"))}
            model = trainer.accelerator.unwrap_model(trainer.model)
            drop_reference(model)  # DPO on a continued adapter: trl's frozen copy of it is not saved
            if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
                trainer.save_model(str(folder))  # gathers the sharded weights; writes on the main process
            elif trainer.accelerator.is_main_process:
                model.save_pretrained(folder)  # a PeftModel saves only its adapter
            if trainer.accelerator.is_main_process and result.mode == "full":
                trainer.processing_class.save_pretrained(folder)
            trainer.accelerator.wait_for_everyone()  # sft+dpo: every process reads the SFT stage's weights next
            if lent is not None:
                model.unload()  # the LoRA layers out of the shared base model
            return bool(trainer.accelerator.is_main_process)
    finally:
        shutil.rmtree(work, ignore_errors=True)
