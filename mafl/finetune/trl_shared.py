"""What SFT, DPO and GRPO fine-tunes share (the parts of trl and transformers; one model's fine-tune is
mafl/finetune/finetune_one.py): the model a fine-tune starts from (:func:`policy`), the trainer arguments mafl
fills in (:func:`trainer_defaults`), a trainer class that records every optimizer step's loss, and quiet loading."""
from __future__ import annotations

import contextlib
from pathlib import Path

from mafl.errors import plain
from mafl.models import torch_dtype


def load_model(path: str, dtype: str, chat_template: str | None):
    """The model and tokenizer in ``path``; the tokenizer as the backends load it (``chat_template``, when given,
    replaces the tokenizer's)."""
    from transformers import AutoModelForCausalLM

    from mafl.models import load_tokenizer

    tokenizer = load_tokenizer(path, chat_template=chat_template)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    return model, tokenizer


def trainer_defaults(kwargs: dict, output_dir: Path, seed: int, device: str, dtype: str) -> dict:
    """A trainer's arguments with what a user did not set filled in (see :mod:`mafl.finetune.finetune_one`); ``seed``
    always."""
    kwargs = dict(kwargs)
    kwargs.setdefault("output_dir", str(output_dir))
    kwargs.setdefault("use_cpu", device == "cpu")
    kwargs.setdefault("report_to", "none")
    kwargs.setdefault("disable_tqdm", True)
    kwargs.setdefault("save_strategy", "no")
    kwargs.setdefault("bf16", dtype == "bfloat16")
    kwargs.setdefault("fp16", dtype == "float16")
    kwargs["seed"] = seed
    return kwargs


@contextlib.contextmanager
def quiet():
    """No progress bars from datasets (map) or transformers (weight loading) inside; the old state after."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets_on, transformers_on = not datasets.are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if datasets_on:
            datasets.enable_progress_bars()
        if transformers_on:
            hf_logging.enable_progress_bar()


def policy(base_path, *, mode, lora, init_adapter, seed, dtype, chat_template, model=None):
    """(model, tokenizer, peft_config) a fine-tune starts from: LoRA on the base model (``model``: a shared one
    already loaded) with a new adapter (``peft_config``) or ``init_adapter`` loaded trainable; full: the base model
    or the previous full model in ``init_adapter``."""
    from transformers import set_seed

    if model is not None and mode != "lora":
        raise ValueError("a shared base model is only for LoRA fine-tuning (full fine-tuning changes it)")
    if model is None:
        src = init_adapter if (mode == "full" and init_adapter is not None) else base_path  # full: a previous model
        model, tokenizer = load_model(src, dtype, chat_template)
    else:
        from mafl.models import load_tokenizer

        tokenizer = load_tokenizer(base_path, chat_template=chat_template)
    set_seed(seed)  # the new adapter's weights depend only on the seed, whatever ran in this process before
    peft_config = None
    if mode == "lora":
        from peft import LoraConfig, PeftModel

        if init_adapter is not None:  # the adapter's own config applies; `lora` is not used
            model = PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
        else:
            peft_config = LoraConfig(**dict(plain(lora) or {}))
    return model, tokenizer, peft_config


def recording_trainer_class(base):
    """``base`` that also records the loss of every optimizer step (summed over gradient accumulation, like the
    trainer's own logged loss; averaged over the processes of a multi-process fine-tune)."""

    class RecordingTrainer(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.step_losses: list[float] = []
            self._pending = 0.0
            self._seen_step = 0

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            if self.state.global_step != self._seen_step:  # a new optimizer step began
                self.step_losses.append(self._pending)
                self._pending, self._seen_step = 0.0, self.state.global_step
            shown = loss.detach()
            if self.accelerator.num_processes > 1:  # several processes: the mean of their losses
                shown = self.accelerator.reduce(shown.clone(), reduction="mean")
            self._pending += float(shown)
            return loss

        def finish_step_losses(self) -> list[float]:
            if self.state.global_step > len(self.step_losses):
                self.step_losses.append(self._pending)
            return self.step_losses

    return RecordingTrainer
