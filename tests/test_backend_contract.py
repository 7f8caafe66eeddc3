"""Every registered backend keeps the contract of ``mafl/backends/base.py``: it takes the common construction
settings and every key of its config group, has the contract's methods, and declares capabilities that agree
with what it does and with what validation refuses."""
from __future__ import annotations

import inspect

import pytest
from omegaconf import OmegaConf

from helpers import CONF, compose_cfg
from mafl.backends import BACKENDS, COMMON_SETTINGS, Backend, Capabilities, backend_class
from mafl.pipeline import ConfigError, validate

METHODS = [name for name, value in vars(Backend).items() if callable(value) and not name.startswith("_")]


def test_every_backend_has_a_config_option_and_every_option_a_backend():
    options = {p.stem: OmegaConf.load(p).name for p in (CONF / "backend").glob("*.yaml")}
    assert set(options.values()) == set(BACKENDS)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_a_backend_takes_the_common_settings_and_its_own_config_keys(name):
    cls = backend_class(name)
    params = inspect.signature(cls.__init__).parameters
    assert list(params)[1] == "model_path"
    own = [k for k in OmegaConf.load(CONF / "backend" / f"{name}.yaml") if k != "name"]
    for key in (*COMMON_SETTINGS, *own):
        assert key in params and params[key].kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: {key}"


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_a_backend_has_every_method_of_the_contract(name):
    cls = backend_class(name)
    assert {"generate", "score", "load_adapter", "unload", "adapters", "close"} <= set(METHODS)
    for method in METHODS:
        assert callable(getattr(cls, method, None)), f"{name}.{method}"
        assert list(inspect.signature(getattr(cls, method)).parameters) == \
            list(inspect.signature(getattr(Backend, method)).parameters), f"{name}.{method}"
    assert isinstance(cls.capabilities, Capabilities)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_validation_refuses_full_fine_tuning_where_the_backend_cannot_serve_it(name, tmp_path):
    cfg = compose_cfg([f"backend={name}", "finetune=full", f"run_dir={tmp_path}"])
    if backend_class(name).capabilities.full_models:
        validate(cfg)
    else:
        with pytest.raises(ConfigError, match=r"^finetune.mode:"):
            validate(cfg)


def test_capabilities_say_what_each_backend_does(monkeypatch, tiny_model_dir, tmp_path):
    """The transformers backend serves a whole model folder; the vLLM backend (a fake engine) refuses one."""
    from fake_vllm import install

    from mafl.backends.hf import HFBackend
    from mafl.backends.vllm import VLLMBackend

    assert HFBackend.capabilities.full_models and not VLLMBackend.capabilities.full_models
    hf = HFBackend(str(tiny_model_dir))
    hf.load_adapter("critic_0", str(tiny_model_dir))
    assert hf.adapters() == ["critic_0"] and "critic_0" in hf.full_models
    install(monkeypatch)
    with pytest.raises(NotImplementedError):
        VLLMBackend(str(tiny_model_dir)).load_adapter("critic_0", str(tiny_model_dir))
