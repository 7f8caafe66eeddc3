"""``finetune.launcher=slurm``: the fine-tunes of a wave as one SLURM job array, through submitit.

``finetune.slurm`` holds submitit's executor parameters, passed straight through (``slurm_partition``,
``timeout_min``, ``mem_gb``, ``slurm_array_parallelism``, ``slurm_additional_parameters``, ...), plus ``folder``
(submitit's logs and pickles; null: ``<run folder>/iter_k/slurm``) and ``cluster`` (submitit's: null picks SLURM
where ``sbatch`` exists; ``local`` runs the jobs as local subprocesses, ``debug`` in this process).
``finetune.resources`` gives each job's ``cpus_per_task`` and ``gpus_per_node`` (``num_gpus`` null: 1 on a GPU
device). The jobs read the sets from, and write the weights to, the run folder, which must be on a filesystem
every node sees. A job that failed (a node lost, a time limit, a Python error) is submitted again, up to
``finetune.max_retries`` times; a finished job is never run again.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from mafl.errors import ConfigError
from mafl.finetune.job_runner import run_job
from mafl.finetune.jobs import FinetuneJob
from mafl.finetune.launchers.ray import task_resources


def _submitit():
    import importlib.util

    if importlib.util.find_spec("submitit") is None:
        raise ConfigError("finetune.launcher: submitit is not installed (pip install submitit)")
    import submitit

    return submitit


class SlurmLauncher:
    name = "slurm"
    poll_s = 1.0

    def __init__(self, settings, run_dir: Path):
        self.submitit = _submitit()
        self.run_dir = Path(run_dir)
        options = settings.options(self.name)
        self.folder = options.pop("folder", None)
        self.cluster = options.pop("cluster", None)
        self.parameters = {k: v for k, v in options.items() if v is not None}
        self.resources, self.max_retries = dict(settings.resources), settings.max_retries

    @classmethod
    def check(cls, settings) -> None:
        _submitit()
        cluster = settings.options(cls.name).get("cluster")
        if cluster not in (None, "slurm", "local", "debug"):
            raise ConfigError(f"finetune.slurm.cluster: {cluster!r} is not one of slurm, local, debug (or null)")

    def _executor(self, jobs: Sequence[FinetuneJob]):
        folder = self.folder or Path(jobs[0].out_dir).parent.parent / "slurm"
        executor = self.submitit.AutoExecutor(folder=str(folder), cluster=self.cluster)
        res = task_resources(jobs[0], self.resources)
        params = {"name": "mafl-finetune", **({"cpus_per_task": int(res["num_cpus"])} if "num_cpus" in res else {}),
                  "gpus_per_node": int(res.get("num_gpus", 0)), **self.parameters}
        if executor.cluster != "slurm":  # the local executors take only the generic parameters
            params.pop("cpus_per_task", None)
        try:
            executor.update_parameters(**params)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"finetune.slurm: {e}") from None
        return executor

    def run(self, jobs: Sequence[FinetuneJob]) -> list[dict]:
        from mafl.progress import stage

        executor = self._executor(jobs)
        records: dict[int, dict] = {}
        attempts = {i: 0 for i in range(len(jobs))}
        with stage(f"fine-tune {len(jobs)} models on {executor.cluster}", total=len(jobs), unit="model") as shown:
            running = dict(zip(range(len(jobs)), executor.map_array(run_job, [j.to_json() for j in jobs])))
            while running:
                for i, sub in list(running.items()):
                    if not sub.done():
                        continue
                    del running[i]
                    try:
                        records[i] = sub.result()
                        shown.update(1)
                    except Exception as e:  # a failed or killed job: submitted again while retries are left
                        if attempts[i] >= self.max_retries:
                            raise RuntimeError(f"fine-tune of {jobs[i].model} failed {attempts[i] + 1} times; "
                                               f"last: {e}") from e
                        attempts[i] += 1
                        running[i] = executor.submit(run_job, jobs[i].to_json())
                if running:
                    time.sleep(self.poll_s)
        return [records[i] for i in range(len(jobs))]

    def close(self) -> None:
        pass
