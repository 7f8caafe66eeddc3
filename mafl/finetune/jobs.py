"""One fine-tune as data: :class:`FinetuneJob` says which model to fine-tune, on which set (a file of the run folder),
from which weights, into which folder, with which seed and settings. A job is plain JSON, so any launcher can send
it to another process or machine (a Ray task, a SLURM array job, an ``accelerate launch`` subprocess, an API), and
the trainer (mafl/finetune/finetune_one.py) reads its settings from it. :func:`mafl.finetune.job_runner.run_job`
runs one.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FinetuneJob:
    model: str  # the model's name in the society (generator_0, critic_1, global, model)
    set_path: str  # its fine-tuning set (JSONL of the run folder)
    out_dir: str  # where its weights go
    init: str | None  # the weights it starts from (None: the base model)
    seed: int
    base_path: str
    mode: str = "lora"
    lora: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"
    chat_template: str | None = None
    accelerate: dict | None = None  # an accelerate config: the job runs as `accelerate launch` processes
    desc: str | None = None  # the console's name of the job
    objective: str = "sft"  # sft | dpo | sft+dpo | grpo (finetune.objective)
    pairs_path: str | None = None  # its preference pairs (JSONL of the run folder; dpo, sft+dpo)
    dpo: dict = field(default_factory=dict)  # trl DPOConfig arguments
    prompts_path: str | None = None  # its GRPO prompts (JSONL of the run folder; grpo)
    grpo: dict = field(default_factory=dict)  # trl GRPOConfig arguments
    reward: str | None = None  # grpo: finetune.reward
    reward_kwargs: dict = field(default_factory=dict)  # grpo: finetune.reward_kwargs
    task: dict | None = None  # grpo: the task that reads the completions' answers (dataset.task and its options)

    @property
    def record(self) -> Path:
        """The job's record: its fine-tuning result, written after its weights."""
        out = Path(self.out_dir)
        return out.parent / f"{out.name}.json"

    @property
    def running(self) -> Path:
        out = Path(self.out_dir)
        return out.parent / f".{out.name}.running"

    def done(self) -> bool:
        return Path(self.out_dir).is_dir() and self.record.exists()

    def load_record(self) -> dict:
        return json.loads(self.record.read_text())

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "FinetuneJob":
        return cls(**d)
