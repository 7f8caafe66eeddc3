"""The launchers of an iteration's fine-tunes on the tiny random Llama: the local launcher (one shared base model
or a fresh one per fine-tune), a real local Ray cluster (a worker killed mid-training is retried) and submitit's
local executor (real subprocesses, as a SLURM array would run them) give the same adapters for the same jobs; a
resumed iteration does not fine-tune a finished model again."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from helpers import REPO, compose_cfg, one_torch_thread, subprocess_env  # noqa: E402
from mafl.finetune.job_runner import run_job  # noqa: E402
from mafl.finetune.jobs import FinetuneJob  # noqa: E402
from mafl.finetune.launchers import make_launcher, run_waves  # noqa: E402
from mafl.finetune.sets import Example, FinetuneSet  # noqa: E402
from mafl.finetune.settings import FinetuneSettings  # noqa: E402

LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": "all-linear", "bias": "none",
        "task_type": "CAUSAL_LM"}
TRAIN = {"max_steps": 3, "per_device_train_batch_size": 2, "learning_rate": 1e-2, "logging_steps": 1}
MODELS = ("generator_0", "critic_0", "generator_1")


def settings(*overrides: str) -> FinetuneSettings:
    return FinetuneSettings.from_cfg(compose_cfg(list(overrides)).finetune)


def slurm_local_launcher(folder: Path):
    """The slurm launcher on submitit's local executor (job processes started on this machine), polling its jobs
    every 0.2 s (not the default's seconds)."""
    launcher = make_launcher(settings("finetune.launcher=slurm", "+finetune.slurm.cluster=local",
                                      "finetune.slurm.timeout_min=10"), folder)
    launcher.poll_s = 0.2
    return launcher


def make_jobs(tiny_model_dir, folder: Path, train=TRAIN, models=MODELS) -> list[FinetuneJob]:
    """One job per model, each on its own set (different examples, different seeds)."""
    jobs = []
    for k, model in enumerate(models):
        items = [Example(prompt=[{"role": "user", "content": f"What is {i}+{k}?"}],
                         response=f"{i}+{k}={i + k}. The answer is {i + k}.", problem_id=str(i), correct=True)
                 for i in range(6)]
        path = FinetuneSet(model, items).save(folder / "sets" / f"{model}.jsonl")
        jobs.append(FinetuneJob(model=model, set_path=str(path), out_dir=str(folder / "models" / model), init=None,
                                seed=100 + k, base_path=str(tiny_model_dir), lora=LORA, train=dict(train)))
    return jobs


def weights(job: FinetuneJob) -> dict:
    return load_file(Path(job.out_dir) / "adapter_model.safetensors")


def assert_same_adapters(a: list[FinetuneJob], b: list[FinetuneJob], atol=1e-6) -> None:
    for ja, jb in zip(a, b):
        wa, wb = weights(ja), weights(jb)
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.allclose(wa[key], wb[key], atol=atol, rtol=1e-4), (ja.model, key)
    # the check can tell adapters apart: two models of one iteration differ
    w0, w1 = weights(a[0]), weights(a[1])
    assert any(not torch.allclose(w0[k], w1[k], atol=atol, rtol=1e-4) for k in w0 if "lora_B" in k)


@pytest.fixture(scope="module")
def local_fresh(tiny_model_dir, tmp_path_factory):
    """The reference: each job fine-tuned on a fresh load of the base model."""
    jobs = make_jobs(tiny_model_dir, tmp_path_factory.mktemp("fresh"))
    launcher = make_launcher(settings("finetune.local.share_base=false"), Path(jobs[0].out_dir).parent)
    records = launcher.run(jobs)
    assert [r["trained"] for r in records] == [True] * len(jobs)
    return jobs


def test_shared_base_gives_the_same_adapters_and_loads_once(tiny_model_dir, tmp_path, local_fresh):
    from safetensors.torch import load_file as load

    jobs = make_jobs(tiny_model_dir, tmp_path)
    launcher = make_launcher(settings(), tmp_path)
    base = launcher._base(jobs[0])
    records = launcher.run(jobs)
    assert base.loads == 1 and launcher.shared is base  # one load of the base model for every fine-tune
    assert [r["model"] if "model" in r else Path(r["out_dir"]).name for r in records] == list(MODELS)
    assert_same_adapters(jobs, local_fresh)
    # the lent model is the base model again: no LoRA layers, its weights those on disk
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = base.model
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    on_disk = load(Path(tiny_model_dir) / "model.safetensors")
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in on_disk.items())


def test_resumed_waves_do_not_train_finished_models(tiny_model_dir, tmp_path):
    jobs = make_jobs(tiny_model_dir, tmp_path)

    class Counting:
        def __init__(self):
            self.launcher, self.given = make_launcher(settings(), tmp_path), []

        def run(self, jobs):
            self.given.append([j.model for j in jobs])
            return self.launcher.run(jobs)

    first = Counting()
    records = run_waves(first, [jobs[:1], jobs[1:]])
    assert first.given == [["generator_0"], ["critic_0", "generator_1"]] and set(records) == set(MODELS)
    stamps = {j.model: Path(j.out_dir).stat().st_mtime_ns for j in jobs}
    import shutil

    shutil.rmtree(jobs[1].out_dir)  # critic_0 was stopped before its folder was complete
    again = Counting()
    resumed = run_waves(again, [jobs[:1], jobs[1:]])
    assert again.given == [["critic_0"]]
    assert resumed["generator_0"] == records["generator_0"] and resumed["generator_1"] == records["generator_1"]
    assert all(Path(j.out_dir).stat().st_mtime_ns == stamps[j.model] for j in jobs if j.model != "critic_0")
    assert run_job(jobs[1]) == resumed["critic_0"]  # done: read back, not trained


# -- Ray ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    # the workers import the checkout under test
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": subprocess_env()["PYTHONPATH"]}})
    yield ray
    ray.shutdown()


def test_ray_runs_the_fine_tunes_in_parallel_with_the_same_adapters(ray_cluster, tiny_model_dir, tmp_path,
                                                                   local_fresh):
    jobs = make_jobs(tiny_model_dir, tmp_path)
    launcher = make_launcher(settings("finetune.launcher=ray", "finetune.resources.num_cpus=1"), tmp_path)
    records = launcher.run(jobs)
    assert [r["out_dir"] for r in records] == [j.out_dir for j in jobs]
    assert all(j.done() for j in jobs)
    assert_same_adapters(jobs, local_fresh)
    assert len({r["host"] for r in records}) == 1  # a local cluster


def test_a_ray_worker_killed_mid_training_is_retried(ray_cluster, tiny_model_dir, tmp_path):
    """SIGKILL to the worker that trains a model, once its training began: Ray runs the task again and the
    iteration completes with the same adapters as the local launcher."""
    long = {**TRAIN, "max_steps": 300}
    jobs = make_jobs(tiny_model_dir, tmp_path / "ray", train=long, models=MODELS[:2])
    reference = make_jobs(tiny_model_dir, tmp_path / "local", train=long, models=MODELS[:2])
    # the reference on one thread, as the Ray task (num_cpus 1: Ray sets OMP_NUM_THREADS=1): 300 steps at lr 1e-2
    # carry a 2-thread run's different float rounding far past the tolerance
    with one_torch_thread():
        make_launcher(settings(), tmp_path).run(reference)

    killed: list[int] = []

    def kill_when_training():
        target = Path(jobs[0].out_dir)
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            training = list(target.parent.glob(f".{target.name}.trainer-*")) if target.parent.exists() else []
            if training and jobs[0].running.exists():
                pid = int(__import__("json").loads(jobs[0].running.read_text())["pid"])
                time.sleep(0.5)  # well into training
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_when_training, daemon=True)
    watcher.start()
    launcher = make_launcher(settings("finetune.launcher=ray", "finetune.max_retries=2"), tmp_path)
    records = launcher.run(jobs)
    watcher.join(timeout=1)
    assert killed, "the worker was never seen training"
    assert all(j.done() for j in jobs) and records[0]["global_step"] == 300
    assert_same_adapters(jobs, reference, atol=1e-5)


def test_ray_launcher_refuses_an_unknown_option():
    from mafl.errors import ConfigError
    from mafl.finetune.launchers import check_finetune

    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match="finetune.ray.adress: unknown key"):
        check_finetune(settings("finetune.launcher=ray", "+finetune.ray.adress=auto"))


# -- SLURM, through submitit's local executor ------------------------------------------------------------

def test_slurm_array_through_submitit_local_executor(tiny_model_dir, tmp_path, local_fresh, monkeypatch):
    pytest.importorskip("submitit")
    for key, value in subprocess_env().items():  # the job processes import the checkout under test
        if key == "PYTHONPATH":
            monkeypatch.setenv(key, value)
    jobs = make_jobs(tiny_model_dir, tmp_path)
    records = slurm_local_launcher(tmp_path).run(jobs)
    assert [Path(r["out_dir"]).name for r in records] == list(MODELS)
    assert_same_adapters(jobs, local_fresh)
    assert (tmp_path / "slurm").is_dir()  # submitit's logs beside the models (folder: null)
    assert REPO.exists()


def test_the_generation_backend_lends_its_base_model_to_the_fine_tunes(tiny_model_dir, tmp_path, local_fresh):
    """No second load between debate and fine-tuning: the fine-tunes train on the backend's own base model, give
    the fresh loads' adapters, and the backend generates as before afterwards."""
    from mafl.backends.base import GenerationRequest, Sampling
    from mafl.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir))
    for job in local_fresh[:2]:
        backend.load_adapter(job.model, job.out_dir)
    requests = [GenerationRequest([{"role": "user", "content": f"What is {i}+1?"}], adapter=a,
                                  sampling=Sampling(temperature=0, max_new_tokens=8))
                for i in range(3) for a in (None, local_fresh[0].model, local_fresh[1].model)]
    before = backend.generate(requests)

    base = backend.lend_base()
    assert backend.adapters() == []
    jobs = make_jobs(tiny_model_dir, tmp_path)
    launcher = make_launcher(settings(), tmp_path, base_model=base)
    launcher.run(jobs)
    assert launcher.shared.model is base and launcher.shared.loads == 0  # trained on the backend's copy
    assert_same_adapters(jobs, local_fresh)

    for job in local_fresh[:2]:
        backend.load_adapter(job.model, job.out_dir)
    assert backend.generate(requests) == before
