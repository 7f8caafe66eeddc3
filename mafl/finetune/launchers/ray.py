"""``finetune.launcher=ray``: the fine-tunes of a wave as Ray tasks, in parallel over the GPUs (or CPUs) of a node
or a Ray cluster.

Each job is one task (:func:`~mafl.finetune.job_runner.run_job` in a Ray worker) asking for ``finetune.resources``
(``num_gpus`` null: 1 on a GPU device, else 0). The cluster: the one this process is already connected to, else
``ray.init(**finetune.ray)`` (``address`` null: a new local cluster, or the one ``RAY_ADDRESS`` names). The
workers read the sets from, and write the weights to, the run folder, which must be on a filesystem every node
sees. A task whose worker dies (killed, out of memory, a lost node) is run again, up to ``finetune.max_retries``
times; a Python error in the fine-tune is not retried (it would fail again) and stops the run. A finished job
is never run again: a resumed run skips the models already fine-tuned.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Sequence

from mafl.errors import ConfigError, known_keys
from mafl.finetune.job_runner import run_job
from mafl.finetune.jobs import FinetuneJob

INSTALL = "pip install 'mafl[ray]'"


def _ray():
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ConfigError(f"finetune.launcher: ray is not installed ({INSTALL})")
    import ray

    return ray


def task_resources(job: FinetuneJob, resources: dict) -> dict:
    """The Ray resources of one job: ``finetune.resources``, ``num_gpus`` null meaning 1 on a GPU device."""
    from mafl.models import resolve_device

    out = {k: v for k, v in resources.items() if v is not None}
    if resources.get("num_gpus") is None:
        out["num_gpus"] = 1 if resolve_device(job.device) == "cuda" else 0
    return out


class RayLauncher:
    name = "ray"

    def __init__(self, settings, run_dir: Path):
        self.ray = _ray()
        self.resources, self.max_retries = dict(settings.resources), settings.max_retries
        if not self.ray.is_initialized():
            options = {k: v for k, v in settings.options(self.name).items() if v is not None}
            self.ray.init(**options)

    @classmethod
    def check(cls, settings) -> None:
        ray = _ray()
        known_keys(settings.options(cls.name), f"finetune.{cls.name}", inspect.signature(ray.init).parameters,
                   what="not an argument of ray.init")

    def run(self, jobs: Sequence[FinetuneJob]) -> list[dict]:
        from mafl.progress import stage

        ray = self.ray
        task = ray.remote(run_job)
        refs = [task.options(max_retries=self.max_retries, retry_exceptions=False,
                             name=f"mafl fine-tune {Path(job.out_dir).parent.parent.name}/{job.model}",
                             **task_resources(job, self.resources)).remote(job.to_json())
                for job in jobs]
        with stage(f"fine-tune {len(jobs)} models on Ray", total=len(refs), unit="model") as shown:
            waiting = list(refs)
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                ray.get(done)  # a failed task raises here, at once
                shown.update(len(done))
        return ray.get(refs)

    def close(self) -> None:
        pass  # a cluster this launcher started lives on until the process ends (the next iteration reuses it)
