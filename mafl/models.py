"""Where a model comes from: the embedded tiny model (built and cached on first use), a hub name, or a folder."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from mafl.errors import ConfigError, choice, known_keys, plain

DTYPES = ("float32", "bfloat16", "float16", "auto")


@dataclass(frozen=True)
class ModelSettings:
    """``conf/model/*.yaml``: the base model (``path``: ``tiny``, a hub name or a folder) and how it is loaded."""

    name: str
    path: str
    dtype: str = "float32"
    trust_remote_code: bool = False
    chat_template: str | None = None
    tiny: dict = field(default_factory=dict)  # the embedded model's recipe (path: tiny)

    @classmethod
    def from_cfg(cls, c: Mapping) -> "ModelSettings":
        known_keys(c, "model", [f.name for f in fields(cls)])
        path = str(c.get("path"))
        if path != "tiny" and (path.startswith((".", "/", "~")) and not Path(path).expanduser().exists()):
            raise ConfigError(f"model.path: no such folder {path}")
        return cls(name=str(c.get("name") or path), path=path, dtype=choice(c, "dtype", "model", DTYPES),
                   trust_remote_code=bool(c.get("trust_remote_code", False)), chat_template=c.get("chat_template"),
                   tiny=dict(plain(c.get("tiny")) or {}))


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_model_path(model: ModelSettings | Mapping[str, Any], *, progress: bool = True) -> str:
    """The folder (or hub name) of the base model; ``path: tiny`` builds the embedded model if not cached."""
    if not isinstance(model, ModelSettings):
        model = ModelSettings.from_cfg(model)
    if model.path == "tiny":
        from mafl.tiny import ensure_tiny_model

        return str(ensure_tiny_model(model.tiny, progress=progress))
    return model.path


def torch_dtype(name: str):
    """The torch dtype called ``name`` (``DTYPES``); ``"auto"`` is passed on as it is (the checkpoint's dtype)."""
    import torch

    if name == "auto":
        return "auto"
    if not isinstance(getattr(torch, str(name), None), torch.dtype):
        raise ValueError(f"unknown dtype {name!r} ({', '.join(DTYPES)})")
    return getattr(torch, name)


def load_tokenizer(path: str, *, chat_template: str | None = None, trust_remote_code: bool = False):
    """A tokenizer ready for batched chat generation: a pad token and left padding."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if chat_template:
        tok.chat_template = chat_template
    if tok.chat_template is None:
        raise ValueError(f"model.chat_template: the tokenizer of {path} has no chat template; set one in the config")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_causal_lm(path: str, *, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code)
    model.to(resolve_device(device))
    model.eval()
    return model


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()
