"""One fine-tune as data: :class:`FinetuneJob` says which model to fine-tune, on which set (a file of the run folder),
from which weights, into which folder, with which seed and settings. A job is plain JSON, so any launcher can send
it to another process or machine (a Ray task, a SLURM array job, an ``accelerate launch`` subprocess, an API).

:func:`run_job` runs one job where it is called and is safe to run again: a job whose model folder and record
(``<out_dir>.json``) are both there is not trained again, and a killed job leaves neither (the model folder is
written atomically, the record after it). While a job trains, ``.<name>.running`` beside its folder says which
host and process run it (so a stuck or killed fine-tune of a cluster run can be found).
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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


def run_job(job: FinetuneJob | dict, *, base: Any = None) -> dict:
    """Fine-tune ``job``'s model here (unless it is done) and return its record: the fine-tuning result, plus the
    job's wall time (``seconds``) and where it ran (``host``). ``base``: a :class:`mafl.finetune.finetune_one.SharedBase`
    that lends its already loaded base model (LoRA only), instead of loading it from disk."""
    import mafl.finetune.finetune_one as trainer
    from mafl.rundir import atomic_write_json

    if isinstance(job, dict):
        job = FinetuneJob.from_json(job)
    if job.done():
        return job.load_record()
    atomic_write_json(job.running, {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
    try:
        start = time.perf_counter()
        if job.accelerate is not None:
            from mafl.finetune.distributed import launch

            result = launch(job)
        else:
            kwargs = trainer.job_arguments(job.to_json())
            result = trainer.finetune_model(job.base_path, kwargs.pop("examples"), job.out_dir, base=base,
                                            desc=job.desc, **kwargs)
        record = {**result.to_json(), "seconds": time.perf_counter() - start, "host": socket.gethostname()}
        atomic_write_json(job.record, record)
        return record
    finally:
        job.running.unlink(missing_ok=True)
