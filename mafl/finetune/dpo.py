"""DPO of one model of the society on its preference pairs (:mod:`mafl.finetune.pairs`) with trl's ``DPOTrainer``.

The pairs are given to trl pre-tokenized, as the SFT sets are: ``prompt_ids`` are
:func:`mafl.backends.chat.prompt_ids` of the pair's prompt (the tokens the model generates from, with the generation
prompt) and ``chosen_ids`` / ``rejected_ids`` are :func:`mafl.backends.chat.response_ids` of each response (its
tokens and eos), so the model is trained on exactly the tokens it produces. trl 1.16's ``DPOTrainer`` always runs
its own preparation (prompt extraction, chat template, tokenization) on the dataset, so mafl's subclass skips it
for rows that already hold ``prompt_ids``; trl's collator then concatenates and pads them, and its loss reads the
completion mask. A pair whose prompt alone fills ``max_length`` is dropped here (trl's own preparation does the
same: truncation would leave no completion token), and counted (``pairs_too_long``).

``dpo`` holds trl ``DPOConfig`` arguments, passed straight through (``beta``, ``loss_type``, ``learning_rate``,
...; ``loss_type: [sigmoid, sft]`` is trl's combined DPO + SFT loss on the chosen side). mafl only fills in what a
user did not set, as for SFT (see :func:`mafl.finetune.trl_shared.trainer_defaults`).

The reference model is the weights the fine-tune starts from (trl's choice for each case): a new LoRA adapter's
reference is the base model (the adapter disabled); a LoRA adapter continued from ``init_adapter`` (an earlier
iteration's) is referenced by a frozen copy of itself, which trl loads as a second adapter named ``ref`` and mafl
deletes before saving; in full mode trl loads a second copy of the starting model. So an iterated run is iterative
DPO: iteration k's policy is pulled towards k's pairs and held near iteration k-1's model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from mafl.errors import plain

REFERENCE_ADAPTER = "ref"  # the name trl gives the frozen copy of a continued adapter
LOGGED = ("rewards/", "logps/")  # the trainer's logged metrics kept in a result's dpo_metrics


def pair_records(pairs) -> list[dict]:
    """Conversational preference records (``Pair.to_json`` form) of a PairSet or a list of pairs/records."""
    from mafl.finetune.pairs import Pair

    items = pairs.pairs if hasattr(pairs, "pairs") else list(pairs)
    return [p.to_json() if isinstance(p, Pair) else dict(p) for p in items]


def tokenized_pairs(records: list[dict], tokenizer, max_length: int | None) -> tuple[list[dict], int]:
    """The rows trl trains on (``prompt_ids``, ``chosen_ids``, ``rejected_ids``) and how many pairs were dropped
    because their prompt alone reaches ``max_length``."""
    from mafl.backends.chat import prompt_ids, response_ids

    rows, dropped = [], 0
    for r in records:
        prompt = prompt_ids(tokenizer, r["prompt"])
        if max_length is not None and len(prompt) >= max_length:
            dropped += 1
            continue
        rows.append({"prompt_ids": prompt, "chosen_ids": response_ids(tokenizer, r["chosen"][0]["content"]),
                     "rejected_ids": response_ids(tokenizer, r["rejected"][0]["content"])})
    return rows, dropped


def dpo_config(dpo: Mapping | None, output_dir: Path, seed: int, device: str, dtype: str):
    from trl import DPOConfig

    from mafl.finetune.trl_shared import trainer_defaults

    return DPOConfig(**trainer_defaults(dict(plain(dpo) or {}), output_dir, seed, device, dtype))


def _pretokenized_class():
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        """trl's DPOTrainer on rows already tokenized by mafl (see the module docstring)."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names:
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return PretokenizedDPOTrainer


def build_dpo_trainer(base_path: str, pairs, work_dir: Path, *, mode: str = "lora", lora: Mapping | None = None,
                      dpo: Mapping | None = None, init_adapter: str | None = None, seed: int = 0,
                      device: str = "cpu", dtype: str = "float32", chat_template: str | None = None, model=None):
    """The ready-to-train ``DPOTrainer`` (``model``: the base model already loaded, LoRA only); its
    ``pairs_too_long`` says how many pairs were dropped. Raises ValueError when no pair is left."""
    import datasets
    from transformers import PrinterCallback

    from mafl.finetune.trl_shared import policy, quiet, recording_trainer_class
    from mafl.models import resolve_device

    records = pair_records(pairs)
    if not records:
        raise ValueError("no preference pairs to train on")
    with quiet():
        args = dpo_config(dpo, work_dir, seed, resolve_device(device), dtype)
        model, tokenizer, peft_config = policy(base_path, mode=mode, lora=lora, init_adapter=init_adapter,
                                               seed=seed, dtype=dtype, chat_template=chat_template, model=model)
        rows, dropped = tokenized_pairs(records, tokenizer, args.max_length)
        if not rows:
            raise ValueError(f"every preference pair's prompt reaches max_length={args.max_length}")
        trainer = recording_trainer_class(_pretokenized_class())(
            model=model, ref_model=None, args=args, train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer, peft_config=peft_config)
    if args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)
    trainer.pairs_too_long = dropped
    return trainer


def drop_reference(model) -> None:
    """Delete trl's frozen reference copy of a continued adapter, so only the trained adapter is saved."""
    if REFERENCE_ADAPTER in (getattr(model, "peft_config", None) or {}):
        model.delete_adapter(REFERENCE_ADAPTER)


def dpo_metrics(log_history: list[dict]) -> dict:
    """The trainer's DPO metrics (``rewards/accuracies``, ``rewards/margins``, ``rewards/chosen``, ``logps/...``):
    ``first`` and ``last`` logged value of each, and their mean over the logs."""
    out: dict[str, dict] = {}
    for key in sorted({k for h in log_history for k in h if k.startswith(LOGGED)}):
        values = [float(h[key]) for h in log_history if key in h]
        out[key] = {"first": values[0], "last": values[-1], "mean": sum(values) / len(values)}
    return out
