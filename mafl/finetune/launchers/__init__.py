"""Who runs the fine-tunes of an iteration (``finetune.launcher``): a registry of launchers, read lazily.

The loop (:func:`mafl.methods.society_loop.finetune_society`) turns an iteration into waves of
:class:`~mafl.finetune.jobs.FinetuneJob` (the shared global model first when ``finetune.global_first``, then every
model of the society) and hands each wave's unfinished jobs to the launcher. The contract of a launcher:

* **Construction.** ``Launcher(settings, run_dir)``: ``settings`` is the run's
  :class:`~mafl.finetune.settings.FinetuneSettings`; the launcher's own options are ``finetune.<name>``
  (``settings.options(name)``: for ``ray``, ``ray.init`` arguments; for ``slurm``, submitit's executor
  parameters), its resources ``settings.resources`` (``num_cpus``, ``num_gpus`` of one fine-tune) and
  ``settings.max_retries``. A launcher's classmethod ``check(settings)`` refuses bad options with a one-line
  :class:`~mafl.errors.ConfigError` before any work (and names the package to install).
* **run(jobs) -> records.** The jobs of one call are independent: the launcher may run them in any order and in
  parallel, wherever it likes, as long as every job's weights land in ``job.out_dir`` and its record in
  ``job.record`` (:func:`~mafl.finetune.job_runner.run_job` does both, atomically, and skips a job already done), and it
  returns every job's record (a dict: the fine-tuning result, ``seconds``, ``host``) in the order of ``jobs``. A
  job that failed for good raises. A job carries everything it needs as JSON; a launcher of remote jobs may
  instead do the fine-tune its own way (an API) and write the same two outputs.
* **Determinism.** A job's adapter depends only on the job (its set, init, seed, settings): the same seeds give
  the same weights whichever launcher ran it.
* **close()** frees what the launcher holds (a shared base model, a cluster connection it opened).

Registered: ``local`` (here, one after the other; LoRA fine-tunes share one base model loaded once), ``ray``
(Ray tasks on a local or remote Ray cluster), ``slurm`` (a SLURM job array through submitit). A new launcher is a
class with ``check``, ``run`` and ``close``, registered in mafl/finetune/launchers/registered.py by ``"module:Class"``, or named in the config by its
``"module:Class"``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, Sequence

from mafl.finetune.launchers.registered import LAUNCHERS

if TYPE_CHECKING:
    from mafl.finetune.jobs import FinetuneJob
    from mafl.finetune.settings import FinetuneSettings



class Launcher(Protocol):
    name: ClassVar[str]

    def __init__(self, settings: "FinetuneSettings", run_dir: Path) -> None: ...

    @classmethod
    def check(cls, settings: "FinetuneSettings") -> None: ...

    def run(self, jobs: Sequence["FinetuneJob"]) -> list[dict]: ...

    def close(self) -> None: ...


def launcher_class(name: str) -> type[Launcher]:
    return LAUNCHERS.load(name)


def check_finetune(settings: "FinetuneSettings") -> None:
    """Before a run that fine-tunes: the trainers' arguments (:meth:`FinetuneSettings.check_arguments`, which
    imports peft and trl), then the launcher's own checks (its options, its package installed)."""
    settings.check_arguments()
    launcher_class(settings.launcher).check(settings)


def make_launcher(settings: "FinetuneSettings", run_dir: Path, base_model=None) -> Launcher:
    """The run's launcher; ``base_model``: a base model already in memory that the local launcher lends to its
    LoRA fine-tunes (the generation backend's, see :meth:`mafl.session.Session.lend_base`)."""
    cls = launcher_class(settings.launcher)
    if base_model is not None:
        return cls(settings, Path(run_dir), base_model=base_model)
    return cls(settings, Path(run_dir))


def run_waves(launcher: Launcher, waves: Sequence[Sequence["FinetuneJob"]]) -> dict[str, dict]:
    """Every job's record, {model: record}: the waves one after the other, the unfinished jobs of a wave given to
    the launcher together (a finished job's record is read back, it is not trained again)."""
    records: dict[str, dict] = {}
    for wave in waves:
        pending = [j for j in wave if not j.done()]
        done = dict(zip((j.model for j in pending), launcher.run(pending))) if pending else {}
        for job in wave:
            records[job.model] = done[job.model] if job.model in done else job.load_record()
    return records
