"""Where a model comes from: the embedded tiny model (built and cached on first use), a hub name, or a folder."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from mafl.errors import ConfigError, choice, known_keys, plain

DTYPES = ("float32", "bfloat16", "float16", "auto")
# model.path values that name a model mafl makes itself: the embedded tiny model, and one made from a GGUF file
BUILT = ("tiny", "gguf")


@dataclass(frozen=True)
class ModelSettings:
    """``conf/model/*.yaml``: the base model (``path``: ``tiny``, ``gguf``, a hub name or a folder) and how it is
    loaded."""

    name: str
    path: str
    dtype: str = "float32"
    trust_remote_code: bool = False
    chat_template: str | None = None
    tiny: dict = field(default_factory=dict)  # the embedded model's recipe (path: tiny)
    gguf: str | None = None  # path: gguf: a GGUF file, or an installed package that ships one (mafl/gguf_models.py)
    gguf_sha256: str | None = None  # the GGUF file's expected sha256 (null: not checked)

    @classmethod
    def from_cfg(cls, c: Mapping) -> "ModelSettings":
        known_keys(c, "model", [f.name for f in fields(cls)])
        path = str(c.get("path"))
        gguf = c.get("gguf")
        if path not in BUILT and (path.startswith((".", "/", "~")) and not Path(path).expanduser().exists()):
            raise ConfigError(f"model.path: no such folder {path}")
        if path == "gguf" and not gguf:
            raise ConfigError("model.gguf: path: gguf needs model.gguf, a GGUF file or a package that ships one")
        if gguf and path != "gguf":
            raise ConfigError(f"model.gguf: set beside model.path={path}; a model from a GGUF file is "
                              f"model=gguf model.gguf={gguf} (or model.path=gguf)")
        sha = c.get("gguf_sha256")
        if sha is not None and not (isinstance(sha, str) and len(sha) == 64
                                    and all(ch in "0123456789abcdefABCDEF" for ch in sha)):
            raise ConfigError(f"model.gguf_sha256: must be 64 hexadecimal digits or null (got {sha!r})")
        return cls(name=str(c.get("name") or path), path=path, dtype=choice(c, "dtype", "model", DTYPES),
                   trust_remote_code=bool(c.get("trust_remote_code", False)), chat_template=c.get("chat_template"),
                   tiny=dict(plain(c.get("tiny")) or {}), gguf=str(gguf) if gguf else None,
                   gguf_sha256=sha.lower() if sha else None)


def check_model_folder(path: str, key: str) -> None:
    """A local ``path`` must be a model's folder (its ``config.json``): a ConfigError naming ``key`` otherwise,
    before transformers tries every tokenizer format there and fails with a message about one of them."""
    folder = Path(str(path)).expanduser()
    if folder.exists() and not (folder / "config.json").is_file():
        raise ConfigError(f"{key}: {path} holds no model (no config.json there): point it at a model's folder "
                          "(one saved with save_pretrained), a hub name, or tiny")


def _hub_error(path: str, e: OSError) -> ConfigError:
    """One line for a model that is not a local folder and cannot be had from the hub (offline, unknown name)."""
    from mafl.errors import one_line

    return ConfigError(f"model.path: cannot load {path}: it is not a local folder and the Hugging Face hub cannot "
                       f"give it (offline, a private or unknown name?): {one_line(e, 160)}")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


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

    check_model_folder(path, "model.path")
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        if Path(str(path)).expanduser().exists():
            raise
        raise _hub_error(path, e) from None
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


class WrongBaseError(ValueError):
    """Fine-tuned weights loaded onto a base model they were not fine-tuned from."""


def weights_base(path: str | Path) -> str | None:
    """The base model the fine-tuned weights in folder ``path`` were made from: mafl's own record
    (``finetune_result.json``'s ``base``), else a LoRA adapter's ``base_model_name_or_path``; None when neither says
    (weights made elsewhere, or a model of an API)."""
    import json

    folder = Path(path)
    for name, key in (("finetune_result.json", "base"), ("adapter_config.json", "base_model_name_or_path")):
        file = folder / name
        if file.is_file():
            found = json.loads(file.read_text()).get(key)
            if found:
                return str(found)
    return None


def same_model(a: str, b: str) -> bool:
    """Whether two model paths name the same model: the same name, the same folder, or embedded tiny models of the
    same recipe and the same weights (a cache folder's name is its recipe's hash: another ``$MAFL_HOME`` may hold
    the same model; one built on another kind of CPU is another model)."""
    if str(a) == str(b):
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if not (pa.is_dir() and pb.is_dir()):
        return False
    if pa.resolve() == pb.resolve():
        return True
    from mafl.model_weights import tiny_weights

    if pa.name != pb.name:
        return False
    weights = tiny_weights(pa)
    return weights is not None and weights == tiny_weights(pb)


def check_weights_base(path: str | Path, base_path: str, name: str) -> None:
    """Refuse to serve ``name``'s weights in ``path`` on the base ``base_path`` when they say they were fine-tuned
    from another base, or from another build of it: the base's weights hash they record (the tiny model's) differs
    from ``base_path``'s (:class:`WrongBaseError`)."""
    import json

    from mafl.model_weights import tiny_weights

    found = weights_base(path)
    if found is not None and not same_model(found, base_path):
        raise WrongBaseError(f"{name}: the weights in {path} were fine-tuned from {found}, not from its agent's base "
                             f"{base_path}")
    record = Path(path) / "finetune_result.json"
    built = json.loads(record.read_text()).get("base_weights") if record.is_file() else None
    here = tiny_weights(base_path) if built else None
    if built and here and built != here:
        raise WrongBaseError(f"{name}: the weights in {path} were fine-tuned from a build of {base_path} with "
                             f"weights {built[:12]}, not this one ({here[:12]}: the tiny model built on another kind "
                             f"of CPU); copy the model folder the run started from")
