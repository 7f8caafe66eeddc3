"""Atomic files and stage markers in a run folder, so a stopped run resumes and a finished stage is never redone.

Every file is written to a temporary name in the same folder and renamed into place: a reader sees either the
old file or the whole new one. A stage is done when its marker ``.done/<name>`` exists; the marker is written
last, after every output of the stage.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable


def atomic_write_text(path: Path | str, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: Path | str, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_jsonl(path: Path | str, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path | str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows


def atomic_folder(final: Path | str) -> Path:
    """A fresh temporary folder beside ``final``; hand it to :func:`commit_folder` when it is complete."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))


def commit_folder(tmp: Path, final: Path | str) -> Path:
    final = Path(final)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


class Stages:
    """Done markers of a run folder's stages."""

    def __init__(self, run_dir: Path | str):
        self.dir = Path(run_dir) / ".done"

    def done(self, name: str) -> bool:
        return (self.dir / name).exists()

    def mark(self, name: str, info: dict | None = None) -> None:
        atomic_write_json(self.dir / name, info or {})

    def info(self, name: str) -> dict:
        return json.loads((self.dir / name).read_text())
