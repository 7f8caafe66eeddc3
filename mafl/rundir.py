"""Atomic files and folders, JSONL reading, and stage markers in a run folder, so a stopped run resumes and a
finished stage is never redone.

Every file is written to a temporary name in the same folder and renamed into place: a reader sees either the
old file or the whole new one; a folder (a fine-tuned model, the tiny model) is built in a temporary folder beside
its place and renamed onto it when complete. A stage is done when its marker ``.done/<name>`` exists; the marker
is written last, after every output of the stage.

A stage output that does not parse (cut short by a full disk, edited by hand) is treated as unfinished: the stage
is redone, with a one-line warning (:func:`read_stage_file`). The temporary files and folders that a killed
process leaves (``.<name>.*.tmp``, an old folder moved aside, a trainer's work folder with its checkpoints) are
removed when the run is resumed (:func:`remove_leftovers`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:  # a write: say which file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    return path


def atomic_write_json(path: Path | str, data: Any, *, strict: bool = False) -> Path:
    """``data`` as indented JSON; ``strict``: standard JSON only (no NaN, nothing converted with ``str``)."""
    text = (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) if strict
            else json.dumps(data, indent=2, ensure_ascii=False, default=str))
    return atomic_write_text(path, text + "\n")


def atomic_write_jsonl(path: Path | str, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def iter_jsonl(path: Path | str, on_error: Callable[[str], None] | None = None,
               max_bytes: int | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, row) for every row of a JSONL file; blank lines are ignored. A line that is not a JSON object
    (or is longer than ``max_bytes``) raises ValueError naming ``path:line``, or, with ``on_error``, is handed to it
    (as that message) and skipped."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if max_bytes is not None and len(raw) > max_bytes:
                line = None
                reason = f"{path}:{lineno}: a row of {len(raw)} bytes, more than the {max_bytes} a row may have"
            else:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    line, reason = None, f"{path}:{lineno}: not UTF-8 text ({err.reason} at byte {err.start})"
            if line is None:
                if on_error is None:
                    raise ValueError(reason)
                on_error(reason)
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                reason = f"{path}:{lineno}: invalid JSON ({err})"
            else:
                if isinstance(row, dict):
                    yield lineno, row
                    continue
                reason = f"{path}:{lineno}: a row must be a JSON object, got {type(row).__name__}"
            if on_error is None:
                raise ValueError(reason)
            on_error(reason)


def read_jsonl(path: Path | str) -> list[dict]:
    """Every row of a JSONL file (see :func:`iter_jsonl`)."""
    return [row for _, row in iter_jsonl(path)]


def read_stage_file(path: Path | str, parse: Callable[[Path], Any]) -> Any | None:
    """``parse(path)``, or None when ``path`` does not exist or does not parse: then the stage that writes it is
    redone, after a one-line warning naming the file and what is wrong with it."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return parse(path)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        logging.getLogger("mafl").warning("%s does not parse (%s): it is made again", path,
                                          " ".join(f"{type(err).__name__}: {err}".split())[:200])
        return None


# what atomic_write_text, atomic_folder and a trainer's work folder leave behind when their process is killed
LEFTOVER = re.compile(r"^\..+(\.tmp|\.old-[^/]*|\.trainer-[^/]*)$")


def remove_leftovers(run_dir: Path | str) -> list[Path]:
    """Remove the temporary files and folders left in ``run_dir`` by a killed run (see :data:`LEFTOVER`);
    returns what was removed. Only for a run folder that no process is working in."""
    removed = []
    for root, dirs, files in os.walk(run_dir):
        for name in [d for d in dirs if LEFTOVER.match(d)]:
            shutil.rmtree(Path(root) / name, ignore_errors=True)
            removed.append(Path(root) / name)
            dirs.remove(name)
        for name in files:
            if LEFTOVER.match(name):
                (Path(root) / name).unlink(missing_ok=True)
                removed.append(Path(root) / name)
    return removed


@contextlib.contextmanager
def atomic_folder(final: Path | str) -> Iterator[Path]:
    """A fresh temporary folder beside ``final`` to build in; when the block ends without an error it replaces
    ``final`` (an older ``final`` is moved aside, then deleted). The temporary folder never outlives the block."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Stages:
    """Done markers of a run folder's stages."""

    def __init__(self, run_dir: Path | str):
        self.dir = Path(run_dir) / ".done"

    def done(self, name: str) -> bool:
        return (self.dir / name).exists()

    def mark(self, name: str) -> None:
        atomic_write_json(self.dir / name, {})
