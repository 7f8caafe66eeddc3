"""Run one :class:`~mafl.finetune.jobs.FinetuneJob` where it is called (every launcher's task body), safe to run
again: a job whose model folder and record (``<out_dir>.json``) are both there is not trained again, and a killed
job leaves neither (the model folder is written atomically, the record after it). While a job trains,
``.<name>.running`` beside its folder says which host and process run it (so a stuck or killed fine-tune of a
cluster run can be found).
"""
from __future__ import annotations

import os
import socket
import time
from typing import Any

from mafl.finetune.jobs import FinetuneJob


def run_job(job: FinetuneJob | dict, *, base: Any = None) -> dict:
    """Fine-tune ``job``'s model here (unless it is done) and return its record: the fine-tuning result, plus the
    job's wall time (``seconds``) and where it ran (``host``). ``base``: a :class:`mafl.finetune.finetune_one.SharedBase`
    that lends its already loaded base model (LoRA only), instead of loading it from disk."""
    from mafl.finetune.finetune_one import finetune_job, job_data
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
            result = finetune_job(job, *job_data(job), base=base)
        record = {**result.to_json(), "seconds": time.perf_counter() - start, "host": socket.gethostname()}
        atomic_write_json(job.record, record)
        return record
    finally:
        job.running.unlink(missing_ok=True)
