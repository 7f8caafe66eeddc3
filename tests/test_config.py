"""The Hydra config tree: every option of every group composes, and bad values are refused before any work."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import CONF, compose_cfg, subprocess_env
from mafl.pipeline import validate
from mafl.errors import ConfigError
from mafl.pipeline import run

GROUPS = ["model", "dataset", "backend", "debate", "finetune", "method", "logger", "metrics", "debug", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_default_config_is_the_tiny_multiagent_experiment():
    cfg = compose_cfg()
    assert (cfg.model.name, cfg.dataset.name, cfg.method.name) == ("tiny", "arithmetic", "multiagent_ft")
    assert (cfg.debate.agents, cfg.debate.rounds, cfg.finetune.iterations) == (3, 2, 2)
    settings = validate(cfg)
    assert settings.debate.agents == 3 and settings.finetune.mode == "lora"


def leaves(node, prefix=()):
    """(key path, value) of every leaf of a plain nested dict."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_validates_and_sets_its_values(group, option, monkeypatch, tmp_path):
    """Each option composes, passes validation (with its data files present), and every value it sets is in the
    composed config (at ``<group>.<key>``, or at ``<key>`` for a ``# @package _global_`` preset)."""
    monkeypatch.setenv("MAFL_DATA_DIR", str(tmp_path))  # data files are only checked by validate()
    extra = []
    if (group, option) == ("dataset", "jsonl"):  # the one option whose files are mandatory keys
        extra = [f"dataset.train_file={tmp_path / 'train.jsonl'}", f"dataset.eval_file={tmp_path / 'eval.jsonl'}"]
    if (group, option) == ("finetune", "openai"):  # fine-tuned API models are served by an API only
        extra = ["backend=openai"]
    if (group, option) == ("model", "gguf"):  # its file is a mandatory key (read only when the model is resolved)
        extra = [f"model.gguf={tmp_path / 'model.gguf'}"]
    cfg = compose_cfg([f"{group}={option}", *extra])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    data_dir = cfg.dataset.get("data_dir")
    for key in ("train_file", "eval_file"):
        name = cfg.dataset.get(key)
        if name is not None:
            path = tmp_path / (Path(data_dir) / name if data_dir else Path(name))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text('{"question": "What is 1+1?", "answer": "2"}\n')
    validate(cfg)

    text = (CONF / group / f"{option}.yaml").read_text()
    own = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"), resolve=False)
    own.pop("defaults", None)
    own.pop("hydra", None)  # the launcher's and sweeper's settings, not part of the job's config
    glob = text.startswith("# @package _global_")
    composed = OmegaConf.to_container(cfg, resolve=False)  # interpolations as written
    # no carve-out for the default method preset: it sets no key of another group, so what a group's file says is
    # what the default run composes (debate.summarize: true is the default run's, not a method preset's)
    for path, value in leaves(own, () if glob else (group,)):
        if value == "???":
            continue  # a mandatory value (given above)
        node = composed
        for key in path:
            node = node[key]
        assert node == value, ".".join(path)


def test_launchers_compose():
    cfg = compose_cfg(["hydra/launcher=slurm"], return_hydra_config=True)
    assert "submitit" in cfg.hydra.launcher._target_.lower()
    assert "BasicLauncher" in compose_cfg(return_hydra_config=True).hydra.launcher._target_


@pytest.mark.parametrize("override,key", [
    ("debate.agents=0", "debate.agents"),
    ("debate.rounds=0", "debate.rounds"),
    ("debate.temperature=-1", "debate.temperature"),
    ("debate.topology=star", "debate.topology"),
    ("finetune.train.learning_rate=-0.1", "finetune.train.learning_rate"),
    ("finetune.iterations=-1", "finetune.iterations"),
    ("finetune.mode=half", "finetune.mode"),
    ("finetune.critic_w=1.5", "finetune.critic_w"),
    ("dataset.task=chess", "dataset.task"),
    ("dataset.n_eval=0", "dataset.n_eval"),
    ("method.name=nope", "method.name"),
    ("device=tpu", "device"),
    ("model.path=./no/such/model", "model.path"),
    ("seed=-3", "seed"),
    ("backend=vllm finetune=full", "finetune.mode"),
    ("backend=vllm finetune.lora.r=128", "finetune.lora.r"),
    ("dataset.prompts.round1='{nope}'", "dataset.prompts.round1"),
    # each component's settings are checked before any work, unknown keys included
    ("metrics.diversity_rounds=[last]", "metrics.diversity_rounds"),
    ("metrics.score_chunk_size=0", "metrics.score_chunk_size"),
    ("+metrics.diversty=false", "metrics.diversty"),
    ("logger.name=tensorboard", "logger.name"),
    ("+logger.projet=x", "logger.projet"),
    ("+backend.batchsize=8", "backend.batchsize"),
    ("backend=vllm +backend.max_lora=4", "backend.max_lora"),
    ("backend.name=tgi", "backend.name"),
    ("+debate.agent=3", "debate.agent"),
    ("+finetune.iteration=3", "finetune.iteration"),
    ("+method.single_modle=true", "method.single_modle"),
    ("method=debate finetune.iterations=3", "finetune.iterations"),
    ("method=star debate.rounds=2", "debate.rounds"),
    ("method=star method.rationalize='{question}'", "method.rationalize"),
    ("method.weights=/no/such/models", "method.weights"),
    ("finetune.mix_general={path:/no/such.jsonl,eta:0.5}", "finetune.mix_general.path"),
    ("dataset.high=-1", "dataset.high"),
    ("+model.dtyp=float32", "model.dtyp"),
    ("+finetune.train.learning_rat=0.1", "finetune.train.learning_rat"),
    ("+finetune.lora.rank=8", "finetune.lora.rank"),
    ("+dataset.n_evals=3", "dataset.n_evals"),
    ("+dataset.levels=[1]", "dataset.levels"),  # a MATH key, not an arithmetic one
    ("model.dtype=float8", "model.dtype"),
])
def test_bad_values_are_refused_naming_the_key(override, key, tmp_path):
    cfg = compose_cfg([*override.split(), f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError) as err:
        run(cfg)
    message = str(err.value)
    assert message.startswith(key + ":"), message
    assert "\n" not in message
    assert not (tmp_path / "run").exists()  # refused before any work


def test_missing_data_file_is_refused(tmp_path):
    cfg = compose_cfg(["dataset=gsm8k", f"dataset.data_dir={tmp_path}", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=r"^dataset.train_file: no such file"):
        run(cfg)


def test_custom_topology_needs_valid_adjacency(tmp_path):
    cfg = compose_cfg(["debate.topology=custom", "debate.adjacency=[[1],[0],[3]]"])
    with pytest.raises(ConfigError, match=r"debate.adjacency\[2\]"):
        validate(cfg)


@pytest.mark.parametrize("override,line", [
    ("debate.agents=0", "debate.agents: must be >= 1 (got 0)"),
    ("metrics.diversity_rounds=[last]",
     "metrics.diversity_rounds: must be a list of first and/or final (got ['last'])"),
])
def test_bad_value_from_the_command_line_exits_with_one_line(tmp_path, override, line):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "mafl", override, f"run_dir={tmp_path}/r",
                           f"hydra.run.dir={tmp_path}/h"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=subprocess_env())
    assert proc.returncode == 2
    assert f"mafl: bad config: {line}" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()


def test_a_subprocess_runs_this_checkout(tmp_path):
    """``subprocess_env``: ``python -m mafl`` from another folder imports the mafl under test."""
    import subprocess
    import sys

    from helpers import REPO

    proc = subprocess.run([sys.executable, "-c", "import mafl; print(mafl.__file__)"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).resolve().is_relative_to(REPO / "mafl")


def test_debate_chunk_size_auto_is_the_backends(tmp_path):
    from helpers import ScriptedBackend
    from mafl.backends import backend_class
    from mafl.backends.base import Capabilities
    from mafl.debate.engine import run_debate
    from mafl.tasks.prompts import Prompts
    from mafl.debate.society import Society
    from mafl.tasks import get_task, load_splits

    assert backend_class("hf").capabilities.chunk_size == 100
    assert backend_class("vllm").capabilities.chunk_size == 1000  # every request of a benchmark's round at once
    cfg = compose_cfg(["dataset.n_eval=10", "debate.agents=2", "debate.rounds=1"])
    settings = validate(cfg)
    assert settings.debate.chunk_size is None  # auto
    backend = ScriptedBackend(lambda r: "The answer is 1.")
    backend.capabilities = Capabilities(chunk_size=4)
    _, problems = load_splits(cfg.dataset)
    run_debate(backend, get_task("arithmetic"), problems, Society(agents=2), settings.debate,
               Prompts.from_cfg(cfg.dataset.prompts), seed=0, out_dir=tmp_path, progress=False)
    assert len(list((tmp_path / "chunks").iterdir())) == 3 and len(backend.calls) == 3  # 4 + 4 + 2 problems
    assert validate(compose_cfg(["debate.chunk_size=7"])).debate.chunk_size == 7
    with pytest.raises(ConfigError, match="debate.chunk_size: must be an integer"):
        validate(compose_cfg(["debate.chunk_size=big"]))


# -- hub models chosen with one key ----------------------------------------------------------------------------

# models mafl makes itself: the embedded tiny model, and those made from a GGUF file (path: gguf)
BUILT = [o for o in options("model") if OmegaConf.load(CONF / "model" / f"{o}.yaml").path in ("tiny", "gguf")]
HUB_PRESETS = [o for o in options("model") if o not in BUILT]
PACKAGED_PRESETS = [o for o in BUILT if OmegaConf.load(CONF / "model" / f"{o}.yaml").get("defaults")]


def test_every_model_preset_but_the_embedded_one_is_a_hub_preset_with_a_set_up():
    assert {"mistral", "llama3", "phi3", "gpt35"} <= set(HUB_PRESETS)
    assert set(BUILT) == {"tiny", "gguf", *PACKAGED_PRESETS} and "smollm2" in PACKAGED_PRESETS
    for preset in HUB_PRESETS:
        assert OmegaConf.load(CONF / "model" / f"{preset}.yaml").get("defaults"), preset


@pytest.mark.parametrize("preset", HUB_PRESETS)
def test_a_hub_model_chosen_with_one_key_gets_the_paper_s_set_up(preset):
    """``mafl model=<preset> device=cuda``: the paper's budgets, sampling and fine-tuning recipe, not the tiny
    model's (160-token answers, LoRA lr 1e-3). Composed with device=cuda; validated on CPU (no GPU here)."""
    cfg = compose_cfg([f"model={preset}", "device=cuda"])
    assert cfg.device == "cuda" and cfg.model.name == preset
    settings = validate(compose_cfg([f"model={preset}", "device=cpu"]))
    debate, finetune = settings.debate, settings.finetune
    if settings.backend.name == "openai":  # GPT-3.5 behind the API: its sampling, OpenAI's fine-tuning jobs
        assert (debate.temperature, debate.top_p, debate.top_k) == (1.0, 1.0, 0)
        assert (debate.max_new_tokens, debate.summary_max_new_tokens) == (1024, 1024)
        assert finetune.launcher == "openai"
        assert finetune.options("openai")["hyperparameters"] == {"n_epochs": 2, "batch_size": 1,
                                                                 "learning_rate_multiplier": 1}
    else:  # a model with weights on a GPU: the public code's sampling and 2048-token budgets
        assert compose_cfg([f"model={preset}"]).device == "auto"
        assert (debate.temperature, debate.top_p, debate.top_k) == (1.0, 0.9, 50)
        assert (debate.max_new_tokens, debate.summary_max_new_tokens) == (2048, 2048)
        assert finetune.train["learning_rate"] == 1.0e-4 and finetune.train["max_length"] == 2048
        assert settings.model.dtype == "bfloat16"
    assert compose_cfg([f"model={preset}", "finetune=full"]).finetune.mode == "full"  # the command line wins


@pytest.mark.parametrize("preset", PACKAGED_PRESETS)
def test_a_packaged_model_brings_its_cpu_set_up_and_is_refused_by_its_file_alone(preset):
    """``mafl model=smollm2``: a GGUF file checked by its sha256, on the CPU, with its own fitted budgets (not the
    tiny model's, not a 7B model's on a GPU); ``model=gguf model.gguf=<its package>`` is refused with the preset."""
    own = OmegaConf.load(CONF / "model" / f"{preset}.yaml")
    settings = validate(compose_cfg([f"model={preset}"]))
    assert settings.model.path == "gguf" and settings.model.gguf == own.gguf
    assert settings.model.gguf_sha256 and len(settings.model.gguf_sha256) == 64 and settings.device == "cpu"
    tiny = validate(compose_cfg([]))
    assert settings.debate.max_new_tokens != tiny.debate.max_new_tokens
    assert settings.finetune.train["learning_rate"] != tiny.finetune.train["learning_rate"]
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(["model=gguf", f"model.gguf={own.gguf}"]))
    assert str(err.value).startswith(f"model.gguf: {own.gguf} is the model of preset {preset}")
    assert str(err.value).endswith(f"choose it with model={preset}") and "\n" not in str(err.value)


@pytest.mark.parametrize("preset", HUB_PRESETS)
def test_a_hub_model_named_by_its_path_is_refused_with_the_preset_that_brings_its_set_up(preset):
    path = OmegaConf.load(CONF / "model" / f"{preset}.yaml").path
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg([f"model.path={path}"]))
    assert str(err.value).startswith(f"model.path: {path} is the model of preset {preset}")
    assert str(err.value).endswith(f"choose it with model={preset}") and "\n" not in str(err.value)
