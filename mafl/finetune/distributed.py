"""Several processes (GPUs) for one fine-tune: ``finetune.accelerate`` is an accelerate config (the keys that
``accelerate config`` writes: ``distributed_type`` DDP/FSDP/DeepSpeed, ``num_processes``, ``fsdp_config``,
``deepspeed_config``, ...), passed straight through to ``accelerate launch --config_file``.

:func:`launch` runs one :class:`~mafl.finetune.jobs.FinetuneJob` that way, from whichever launcher runs the job
(in this process for ``local``, inside a Ray task or a SLURM job for the others): it writes the config and the
job to files, starts ``accelerate launch -m mafl.finetune.distributed <job> <folder>``, and every process runs
:func:`mafl.finetune.finetune_one.train_into` (the trainer shards the data, or the model, across them; the main process
writes the weights, FSDP and DeepSpeed gathering them first). The folder is renamed onto the job's ``out_dir``
only when all the processes succeeded, so a failed launch leaves nothing behind.

A one-machine config without ``main_process_port`` gets a free port drawn for the launch. Left to its default,
accelerate takes 29500, and moves to another port only if 29500 is taken when it looks: fine-tunes launched
together on one machine (Ray tasks on one node, SLURM array jobs sharing one) all see it free and collide. (Its own
``main_process_port: 0`` draws one on the GPU paths only; a MULTI_CPU launch would be given port 0 itself.) A port
the config names, and every multi-machine config, is passed through as it is.

    accelerate config                          # writes ~/.cache/huggingface/accelerate/default_config.yaml
    mafl finetune.accelerate=$HOME/.cache/huggingface/accelerate/default_config.yaml
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from mafl.rundir import atomic_folder


def launch_command(config_file: Path, job_file: Path, folder: Path) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
            "-m", "mafl.finetune.distributed", str(job_file), str(folder)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_config(accelerate: dict) -> dict:
    """The accelerate config written for one launch: ``accelerate`` with a free port where it names none on one
    machine (the processes of several machines must agree on theirs, so those keep accelerate's default)."""
    config = dict(accelerate)
    if int(config.get("num_machines") or 1) <= 1 and config.get("main_process_port") is None:
        config["main_process_port"] = free_port()
    return config


def launch(job):
    """Fine-tune ``job`` (a :class:`~mafl.finetune.jobs.FinetuneJob`, which imports this module: it is not imported
    back) with ``accelerate launch`` processes; its weights land atomically in ``job.out_dir``."""
    import yaml

    from mafl.finetune.finetune_one import RESULT_FILE, FinetuneResult

    out = Path(job.out_dir)
    with atomic_folder(out) as folder, tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.launch-") as d:
        config_file, job_file = Path(d) / "accelerate.yaml", Path(d) / "job.json"
        config_file.write_text(yaml.safe_dump(launch_config(job.accelerate)))
        job_file.write_text(json.dumps(job.to_json()))
        proc = subprocess.run(launch_command(config_file, job_file, folder), capture_output=True, text=True)
        # a process killed by the launcher when another failed leaves its trainer's work folder behind
        # (and the SFT stage of an sft+dpo fine-tune)
        for leftover in [*out.parent.glob(f".{out.name}.trainer-*"), folder.parent / f"{folder.name}.sft"]:
            shutil.rmtree(leftover, ignore_errors=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
            raise RuntimeError(f"accelerate launch of the fine-tune of {job.model} failed "
                               f"(exit {proc.returncode}):\n{tail}")
        data = json.loads((folder / RESULT_FILE).read_text())
    return FinetuneResult(**{**data, "out_dir": Path(data["out_dir"])})


def main(argv: list[str] | None = None) -> None:
    """One process of a multi-process fine-tune: ``python -m mafl.finetune.distributed <job.json> <folder>``."""
    from mafl.finetune.finetune_one import job_data, train_into
    from mafl.finetune.jobs import FinetuneJob

    job_file, folder = (argv if argv is not None else sys.argv[1:])[:2]
    job = FinetuneJob.from_json(json.loads(Path(job_file).read_text()))
    train_into(Path(folder), job, *job_data(job))


if __name__ == "__main__":
    main()
