"""One model's fine-tune as several processes through ``accelerate launch`` (finetune.accelerate): DDP over gloo
with 2 CPU processes follows the single-process loss curve; an FSDP config reaches every process as it was given."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from helpers import subprocess_env  # noqa: E402
from mafl.finetune.job_runner import run_job  # noqa: E402
from mafl.finetune.launchers import make_launcher  # noqa: E402
from test_finetune_launchers import TRAIN, make_jobs, settings  # noqa: E402

# the processes split each batch: 2 processes x 1 example = the single process's batch of 2
DDP = {"distributed_type": "MULTI_GPU", "num_processes": 2, "num_machines": 1, "mixed_precision": "no"}
FSDP = {**DDP, "distributed_type": "FSDP",
        "fsdp_config": {"fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                        "fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
                        "fsdp_state_dict_type": "FULL_STATE_DICT"}}


@pytest.fixture()
def checkout_env(monkeypatch):
    """The launched processes import the checkout under test."""
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])


def test_ddp_on_two_cpu_processes_follows_the_single_process_loss_curve(tiny_model_dir, tmp_path, checkout_env):
    one = make_jobs(tiny_model_dir, tmp_path / "one", train={**TRAIN, "max_steps": 4, "per_device_train_batch_size": 2},
                    models=["generator_0"])[0]
    two = make_jobs(tiny_model_dir, tmp_path / "two", train={**TRAIN, "max_steps": 4, "per_device_train_batch_size": 1},
                    models=["generator_0"])[0]
    two = replace(two, accelerate=DDP)
    single = run_job(one)
    (ddp,) = make_launcher(settings(), tmp_path).run([two])  # the local launcher: its own processes, no shared base
    assert single["processes"] == 1 and ddp["processes"] == 2
    assert ddp["distributed"] == ("MULTI_GPU" if torch.cuda.is_available() else "MULTI_CPU")
    assert len(ddp["losses"]) == len(single["losses"]) == 4
    assert ddp["losses"] == pytest.approx(single["losses"], rel=1e-3)
    assert ddp["losses"][-1] < ddp["losses"][0]  # it learns
    # a port drawn for this launch, not accelerate's fixed 29500, which two launches starting together both take
    assert 0 < int(ddp["launch_settings"]["MASTER_PORT"]) != 29500
    assert (Path(two.out_dir) / "adapter_model.safetensors").exists() and two.record.exists()
    leftovers = [p.name for p in Path(two.out_dir).parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_an_fsdp_config_is_passed_through_to_every_process(tiny_model_dir, tmp_path, checkout_env):
    job = make_jobs(tiny_model_dir, tmp_path, train={**TRAIN, "max_steps": 2, "per_device_train_batch_size": 1},
                    models=["generator_0"])[0]
    record = run_job(replace(job, accelerate=FSDP))
    seen = record["launch_settings"]
    assert seen["ACCELERATE_USE_FSDP"] == "true" and seen["FSDP_VERSION"] == "2"
    assert seen["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "LlamaDecoderLayer"
    assert seen["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"
    # accelerate shards with FSDP on GPUs; on CPUs the trainer falls back to plain data parallelism
    assert record["distributed"] == ("FSDP" if torch.cuda.is_available() else "MULTI_CPU")
    assert record["processes"] == 2 and record["global_step"] == 2


def test_a_failed_launch_leaves_nothing_and_says_why(tiny_model_dir, tmp_path, checkout_env):
    job = make_jobs(tiny_model_dir, tmp_path, models=["generator_0"])[0]
    bad = replace(job, base_path=str(tmp_path / "no_model"), accelerate=DDP)
    with pytest.raises(RuntimeError, match="accelerate launch of the fine-tune of generator_0 failed"):
        run_job(bad)
    assert not Path(job.out_dir).exists() and not job.record.exists()
    assert [p.name for p in Path(job.out_dir).parent.iterdir() if p.name.startswith(".")] == []


def test_accelerate_config_from_a_yaml_file(tmp_path):
    import yaml

    from mafl.errors import ConfigError

    path = tmp_path / "fsdp.yaml"
    path.write_text(yaml.safe_dump(FSDP))
    assert settings(f"finetune.accelerate={path}").accelerate == FSDP
    with pytest.raises(ConfigError, match="finetune.accelerate: no such file"):
        settings(f"finetune.accelerate={tmp_path / 'missing.yaml'}")
    with pytest.raises(ConfigError, match="finetune.accelerate.num_processes: must be >= 1"):
        settings("+finetune.accelerate.num_processes=0").check_arguments()


def test_only_a_one_machine_config_without_a_port_gets_a_free_one():
    from mafl.finetune.distributed import launch_config

    for one_machine in (DDP, {**DDP, "distributed_type": "MULTI_CPU"}):  # accelerate draws none on the CPU path
        port = launch_config(one_machine).pop("main_process_port")
        assert isinstance(port, int) and 0 < port != 29500 and "main_process_port" not in one_machine
    assert launch_config({**DDP, "main_process_port": 31000})["main_process_port"] == 31000
    two_machines = {**DDP, "num_machines": 2, "main_process_ip": "10.0.0.1"}
    assert launch_config(two_machines) == two_machines  # every machine must agree on the port
