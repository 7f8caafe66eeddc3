"""``finetune.launcher=local`` (the default): the fine-tunes of a wave one after the other, in this process.

LoRA fine-tunes share one base model, loaded on the first and lent to each in turn
(:class:`~mafl.finetune.finetune_one.SharedBase`), instead of 2N loads from disk per iteration;
``finetune.local.share_base=false`` loads a fresh copy for each (the same adapters either way). A job with
``finetune.accelerate`` runs as its own ``accelerate launch`` processes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mafl.errors import known_keys
from mafl.finetune.job_runner import run_job
from mafl.finetune.jobs import FinetuneJob

OPTIONS = ("share_base",)


class LocalLauncher:
    name = "local"

    def __init__(self, settings, run_dir: Path, base_model=None):
        self.share_base = bool(settings.options(self.name).get("share_base", True))
        self.base_model = base_model  # a base model already in memory to lend (e.g. the generation backend's)
        self.shared = None

    @classmethod
    def check(cls, settings) -> None:
        known_keys(settings.options(cls.name), f"finetune.{cls.name}", OPTIONS)

    def run(self, jobs: Sequence[FinetuneJob]) -> list[dict]:
        """The jobs of one base after one another (a mixed society's jobs have several: each is loaded once), the
        records in the order of ``jobs``."""
        order = sorted(range(len(jobs)), key=lambda i: ([j.base_path for j in jobs].index(jobs[i].base_path), i))
        records: dict[int, dict] = {}
        for i in order:
            records[i] = run_job(jobs[i], base=self._base(jobs[i]))
        return [records[i] for i in range(len(jobs))]

    def _base(self, job: FinetuneJob):
        if not self.share_base or job.mode != "lora" or job.accelerate is not None:
            return None
        from mafl.finetune.finetune_one import SharedBase

        if self.shared is None or not self.shared.matches(job.base_path, job.dtype, job.chat_template):
            # the lent model is the first base's (a session lends one only when every job has the same base)
            self.shared = SharedBase(job.base_path, job.dtype, job.chat_template, model=self.base_model)
            self.base_model = None
        return self.shared

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()
            self.shared = None
