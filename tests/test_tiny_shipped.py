"""The default tiny model ships with mafl: the default recipe loads its weights (hash-checked) with no pretraining,
any other recipe is pretrained here, and a damaged shipped file is refused with one line."""
from __future__ import annotations

import json
import shutil

import pytest

import mafl.tiny.pretrain as pretrain_module
import mafl.tiny.shipped as shipped_module
from helpers import compose_cfg
from mafl.cli import failure_line
from mafl.tiny import LOCAL_SUFFIX, ensure_tiny_model, read_recipe, tiny_model_key, tiny_weights, weights_sha256
from mafl.tiny.shipped import ShippedModel, ShippedModelError, shipped_model, why_different

# the default recipe shrunk: built in seconds
SMALLER = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
               steps=20, batch_size=8, warmup_steps=5)


def default_recipe() -> dict:
    return dict(compose_cfg([]).model.tiny)


def small_recipe() -> dict:
    return {**default_recipe(), **SMALLER}


@pytest.fixture
def no_pretraining(monkeypatch):
    """Pretraining fails the test; returns the list of its attempted calls."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("pretraining was invoked")

    monkeypatch.setattr(pretrain_module, "pretrain", refuse)
    return calls


@pytest.fixture
def counted_pretraining(monkeypatch):
    """Pretraining runs for real and is counted."""
    calls = []
    real = pretrain_module.pretrain
    monkeypatch.setattr(pretrain_module, "pretrain", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_the_default_recipe_has_shipped_weights_whose_hash_is_recorded():
    shipped = shipped_model(tiny_model_key(default_recipe()))
    assert shipped is not None and len(shipped.weights_sha256) == 64
    assert weights_sha256(shipped.path) == shipped.weights_sha256
    record = json.loads((shipped.path / "recipe.json").read_text())
    assert record["weights_sha256"] == shipped.weights_sha256 and record["recipe"] == default_recipe_as_built()
    assert set(shipped.built_with()) == {"torch", "cpu_capability", "threads", "cpu"}
    # one weights file, no checkpoints
    weights = [p.name for p in shipped.path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt")]
    assert weights == ["model.safetensors"]


def default_recipe_as_built() -> dict:
    from dataclasses import asdict

    from mafl.tiny.pretrain import Recipe

    return asdict(Recipe.from_mapping(default_recipe()))


def test_the_default_config_runs_on_the_shipped_model_without_pretraining(tmp_path, monkeypatch, no_pretraining):
    from mafl.pipeline import run

    monkeypatch.setenv("MAFL_HOME", str(tmp_path / "home"))
    shipped = shipped_model(tiny_model_key(default_recipe()))
    run(compose_cfg(["debug=smoke", "dataset.n_train=6", "dataset.n_eval=4", "debate.chunk_size=6",
                     "metrics.diversity_problems=2", f"run_dir={tmp_path / 'run'}"]))
    assert no_pretraining == []
    (cached,) = (p for p in (tmp_path / "home" / "tiny").iterdir() if p.is_dir())
    assert cached.name == tiny_model_key(default_recipe())
    assert read_recipe(cached)["source"] == "shipped" and weights_sha256(cached) == shipped.weights_sha256
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["model_weights"] == shipped.weights_sha256
    assert {r["iteration"] for r in results["records"]} == {0, 1}
    # the shipped model answers Arithmetic: its round-1 answers are mostly right even at smoke size
    single = [r["value"] for r in results["records"]
              if r["metric"] == "accuracy/agent_round1" and r["iteration"] == 0 and r["agent"] is None]
    assert single and single[0] > 0.5


def test_a_changed_recipe_is_refused_the_shipped_weights_and_built_here(tmp_path, counted_pretraining):
    recipe = {**default_recipe(), "steps": 2, "batch_size": 2, "warmup_steps": 1}
    assert shipped_model(tiny_model_key(recipe)) is None
    path = ensure_tiny_model(recipe, home=tmp_path, progress=False)
    assert counted_pretraining == [1] and path.name == tiny_model_key(recipe)
    shipped = shipped_model(tiny_model_key(default_recipe()))
    assert read_recipe(path)["source"] == "built" and tiny_weights(path) != shipped.weights_sha256
    assert [p.name for p in (tmp_path / "tiny").iterdir() if p.is_dir()] == [path.name]  # nothing shipped copied


def test_a_damaged_shipped_file_is_refused_with_one_line(tmp_path, monkeypatch, no_pretraining):
    shipped = shipped_model(tiny_model_key(default_recipe()))
    damaged = tmp_path / "package" / shipped.folder
    shutil.copytree(shipped.path, damaged)
    data = bytearray((damaged / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (damaged / "model.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(shipped_module, "SHIPPED_DIR", tmp_path / "package")
    with pytest.raises(ShippedModelError) as caught:
        ensure_tiny_model(default_recipe(), home=tmp_path / "home", progress=False)
    message, status = failure_line(caught.value)
    assert "\n" not in message and status == 1
    assert message.startswith("the shipped tiny model") and "damaged" in message
    assert f"mafl ships {shipped.weights_sha256[:16]}" in message and "reinstall mafl" in message
    assert not [p for p in (tmp_path / "home" / "tiny").iterdir() if p.is_dir()]  # nothing half-copied left behind
    (damaged / "model.safetensors").unlink()
    with pytest.raises(ShippedModelError, match="missing"):
        ensure_tiny_model(default_recipe(), home=tmp_path / "home", progress=False)
    assert no_pretraining == []


@pytest.fixture(scope="module")
def small_shipped(tmp_path_factory):
    """A small recipe's model built here, then laid out as a shipped model (its folder and its real hash)."""
    built = ensure_tiny_model(small_recipe(), home=tmp_path_factory.mktemp("build_home"), progress=False)
    package = tmp_path_factory.mktemp("package")
    shutil.copytree(built, package / "vsmall")
    return package, ShippedModel("vsmall", weights_sha256(built))


@pytest.fixture
def ship_small(small_shipped, monkeypatch):
    package, shipped = small_shipped
    monkeypatch.setattr(shipped_module, "SHIPPED_DIR", package)
    monkeypatch.setitem(shipped_module.SHIPPED, tiny_model_key(small_recipe()), shipped)
    return shipped


def test_a_shipped_recipe_is_copied_once_and_checked_on_every_load(ship_small, tmp_path, counted_pretraining):
    path = ensure_tiny_model(small_recipe(), home=tmp_path, progress=False)
    assert counted_pretraining == [] and path.name == tiny_model_key(small_recipe())
    assert weights_sha256(path) == ship_small.weights_sha256 and read_recipe(path)["source"] == "shipped"
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model(small_recipe(), home=tmp_path, progress=False) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # not copied again
    # a damaged copy in the cache is copied again from the package
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (path / "model.safetensors").write_bytes(bytes(data))
    assert ensure_tiny_model(small_recipe(), home=tmp_path, progress=False) == path
    assert weights_sha256(path) == ship_small.weights_sha256 and counted_pretraining == []


def test_a_model_built_here_before_is_set_aside_for_the_shipped_one(ship_small, tmp_path, counted_pretraining):
    cached = tmp_path / "tiny" / tiny_model_key(small_recipe())
    shutil.copytree(ship_small.path, cached)
    data = bytearray((cached / "model.safetensors").read_bytes())
    data[-1] ^= 1  # as if pretrained on another kind of CPU
    (cached / "model.safetensors").write_bytes(bytes(data))
    record = json.loads((cached / "recipe.json").read_text())
    (cached / "recipe.json").write_text(json.dumps({**record, "weights_sha256": weights_sha256(cached)}))
    other = weights_sha256(cached)
    assert ensure_tiny_model(small_recipe(), home=tmp_path, progress=False) == cached
    assert weights_sha256(cached) == ship_small.weights_sha256 and counted_pretraining == []
    aside = cached.with_name(cached.name + LOCAL_SUFFIX)
    assert weights_sha256(aside) == other  # kept, not deleted


def test_build_tiny_builds_a_shipped_recipe_here_beside_the_shipped_copy(ship_small, tmp_path, counted_pretraining):
    shipped_copy = ensure_tiny_model(small_recipe(), home=tmp_path, progress=False)
    local = ensure_tiny_model(small_recipe(), home=tmp_path, progress=False, build=True)
    assert counted_pretraining == [1] and local == shipped_copy.with_name(shipped_copy.name + LOCAL_SUFFIX)
    assert read_recipe(local)["source"] == "built" and read_recipe(shipped_copy)["source"] == "shipped"
    # the same recipe, kind of CPU, kernels and threads: the same weights as the shipped build
    assert weights_sha256(local) == ship_small.weights_sha256
    # runs still use the shipped one
    assert ensure_tiny_model(small_recipe(), home=tmp_path, progress=False) == shipped_copy


def test_build_tiny_says_whether_this_machine_builds_the_shipped_weights(ship_small, tmp_path, monkeypatch, capsys):
    from mafl.tiny.__main__ import main

    monkeypatch.setenv("MAFL_HOME", str(tmp_path))
    argv = ["--n-eval", "0", *(f"{k}={v}" for k, v in SMALLER.items())]
    main(argv)
    out = capsys.readouterr().out
    assert f"tiny model: {tmp_path / 'tiny' / (tiny_model_key(small_recipe()) + LOCAL_SUFFIX)}" in out
    assert "the shipped model's weights: this machine builds what mafl ships" in out
    monkeypatch.setitem(shipped_module.SHIPPED, tiny_model_key(small_recipe()), ShippedModel("vsmall", "0" * 64))
    main(argv)  # built already: compared again
    out = capsys.readouterr().out
    assert "not the shipped model's weights (0000000000000000): nothing recorded differs" in out
    assert "Runs of model=tiny use the shipped model; model.path=" in out


def test_why_the_weights_differ_names_what_differs_between_the_builds():
    shipped = {"torch": "2.13.0+cpu", "cpu_capability": "AVX512", "threads": 2, "cpu": "AuthenticAMD AMD EPYC"}
    assert "nothing recorded differs" in why_different(shipped, dict(shipped))
    here = {**shipped, "cpu_capability": "AVX2", "threads": 1}
    assert why_different(shipped, here) == ("CPU kernels AVX2 here, AVX512 for the shipped build; "
                                            "threads 1 here, 2 for the shipped build")
