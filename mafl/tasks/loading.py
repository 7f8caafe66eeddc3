"""Train and eval problems from a dataset config group (conf/dataset/*.yaml).

    train, eval = load_splits(cfg.dataset)

Where rows come from: arithmetic problems are generated; otherwise the JSONL files ``train_file`` and
``eval_file`` (under ``data_dir`` when it is set; the config fills it from ``MAFL_DATA_DIR``), or, when
``data_dir`` is null and the config has a ``hub`` entry, the Hugging Face hub through ``datasets``.

Rows become Problems through the task (``Task.problem``); ids are stable: MATH's ``unique_id`` when rows
have one, else ``<name>/<file stem or split>/<row index>`` (e.g. ``gsm8k/test/17``). MATH rows are first
filtered by ``levels`` and ``subjects`` (rows left out are not checked further). A malformed row (bad JSON,
missing or empty field, no gold answer) stops loading with an error naming file, line and field; with
``skip_bad_rows: true`` such rows are counted and reported in a logged warning instead.

Sampling: ``n_train``/``n_eval`` problems (null: all) taken from a seeded shuffle of each split, kept in file
order; a smaller n gives a subset of a larger one. Train never holds an eval problem (same id or question).
"""
from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mafl.tasks.arithmetic import arithmetic_problems
from mafl.tasks.base import BadRow, Problem, Task
from mafl.tasks.math_task import math_level

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """Data that cannot be loaded as configured: a missing file, a malformed row, an impossible sample."""


def _plain(cfg: Mapping) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf comes with hydra
        return dict(cfg)
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return dict(cfg)


def read_jsonl(path: Path, skip_bad_rows: bool = False, bad: list[str] | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, row) for every row of a JSONL file; a malformed line raises DatasetError, or is recorded
    in ``bad`` and skipped when ``skip_bad_rows``. Blank lines are ignored."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
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
            if not skip_bad_rows:
                raise DatasetError(reason)
            if bad is not None:
                bad.append(reason)


def _rows(cfg: dict, split: str) -> tuple[str, Iterator[tuple[int, dict, str]], list[str]] | None:
    """(source label, rows as (index, row, where), bad-row list) of one split, or None when it has none."""
    key = f"{split}_file"
    data_dir, hub = cfg.get("data_dir"), cfg.get("hub")
    skip = bool(cfg.get("skip_bad_rows", False))
    bad: list[str] = []
    if data_dir is None and hub:
        hub_split = hub.get(f"{split}_split")
        if hub_split is None:
            return None
        return str(hub_split), _hub_rows(hub, hub_split), bad
    name = cfg.get(key)
    if name == "???" or (name is None and split == "eval"):
        raise DatasetError(f"dataset.{key} is not set (the {split} problems are read from it; null: no {split} "
                           f"problems, allowed for train_file only)")
    if name is None:
        return None
    path = Path(data_dir) / name if data_dir is not None else Path(name)
    if not path.is_file():
        where = f"dataset.data_dir={data_dir!r} + " if data_dir is not None else ""
        raise DatasetError(f"{path} does not exist ({where}dataset.{key}={name!r}); set dataset.data_dir, "
                           f"or MAFL_DATA_DIR, to the folder holding the data")
    rows = ((lineno - 1, row, f"{path}:{lineno}") for lineno, row in read_jsonl(path, skip, bad))
    return path.stem, rows, bad


def _hub_rows(hub: Mapping, split: str) -> Iterator[tuple[int, dict, str]]:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - a core dependency
        raise ImportError("loading from the hub needs `datasets`: pip install datasets") from err
    names = hub.get("name")
    index = 0
    for name in names if isinstance(names, (list, tuple)) else [names]:
        for row in datasets.load_dataset(hub["path"], name, split=split):
            yield index, dict(row), f"{hub['path']}{'/' + name if name else ''} split {split} row {index}"
            index += 1


def _problems(task: Task, cfg: dict, split: str) -> list[Problem]:
    found = _rows(cfg, split)
    if found is None:
        return []
    label, rows, bad = found
    prefix = cfg.get("name") or task.name
    keep = _selector(cfg)
    problems = []
    for index, row, where in rows:
        if not keep(task.row_meta(row)):  # rows left out by levels/subjects are not read further
            continue
        uid = row.get("unique_id")
        pid = str(uid) if isinstance(uid, str) and uid else f"{prefix}/{label}/{index}"
        try:
            problems.append(task.problem(row, pid))
        except BadRow as err:
            if not cfg.get("skip_bad_rows"):
                raise DatasetError(f"{where}: {err} (dataset.skip_bad_rows=true skips such rows)") from err
            bad.append(f"{where}: {err}")
    if bad:
        log.warning("skipped %d malformed rows of the %s split (dataset.skip_bad_rows=true): %s%s", len(bad), split,
                    "; ".join(bad[:3]), "; ..." if len(bad) > 3 else "")
    return problems


def _subject_key(s: object) -> str:
    """"Counting & Probability", "counting_and_probability" -> "counting_and_probability"."""
    return re.sub(r"[^a-z0-9]+", "_", str(s).lower().replace("&", "and")).strip("_")


def _selector(cfg: dict) -> Callable[[dict], bool]:
    """Whether a row's meta passes the ``levels`` and ``subjects`` filters (null: no filter)."""
    levels, subjects = cfg.get("levels"), cfg.get("subjects")
    if isinstance(levels, (str, int)):
        levels = [levels]
    if isinstance(subjects, str):
        subjects = [subjects]
    wanted_levels = None if levels is None else {math_level(x) for x in levels}
    wanted_subjects = None if subjects is None else {_subject_key(x) for x in subjects}

    def keep(meta: dict) -> bool:
        if wanted_levels is not None and meta.get("level") not in wanted_levels:
            return False
        return wanted_subjects is None or _subject_key(meta.get("subject")) in wanted_subjects

    return keep


def _sample(problems: list[Problem], n: int | None, seed: object, split: str) -> list[Problem]:
    if n is None:
        return problems
    if int(n) > len(problems):
        raise DatasetError(f"dataset.n_{split}={n} but only {len(problems)} problems are available "
                           f"(after filters); set dataset.n_{split}: null for all of them")
    order = list(range(len(problems)))
    random.Random(f"{seed}/{split}").shuffle(order)
    return [problems[i] for i in sorted(order[: int(n)])]


def load_splits(dataset_cfg: Mapping) -> tuple[list[Problem], list[Problem]]:
    """(train, eval) problems of a dataset config group; see the module doc.

    The eval problems are drawn with ``eval_seed`` and the train problems with ``train_seed`` (both default 0,
    whatever the run's seed). ``protocol: official`` (the public code's protocol) returns the eval problems as
    the train problems too: the society then fine-tunes on debates of the questions it is evaluated on."""
    cfg = _plain(dataset_cfg)
    train_problems, eval_problems = _heldout_splits(cfg)
    if cfg.get("protocol", "heldout") == "official":
        return list(eval_problems), eval_problems
    return train_problems, eval_problems


def _heldout_splits(cfg: dict) -> tuple[list[Problem], list[Problem]]:
    from mafl.tasks import task_from_config

    eval_seed, train_seed = cfg.get("eval_seed", 0), cfg.get("train_seed", 0)
    if cfg.get("task") == "arithmetic":
        return arithmetic_problems(cfg.get("n_train"), cfg.get("n_eval"), eval_seed=eval_seed,
                                   train_seed=train_seed, low=cfg.get("low", 0), high=cfg.get("high", 29))
    task = task_from_config(cfg)
    eval_pool = _problems(task, cfg, "eval")
    eval_problems = _sample(eval_pool, cfg.get("n_eval"), eval_seed, "eval")
    # train never sees an eval problem, even if both come from one file
    held_out = {p.id for p in eval_problems} | {" ".join(p.question.split()) for p in eval_problems}
    train_all = _problems(task, cfg, "train")
    train_pool = [p for p in train_all if p.id not in held_out and " ".join(p.question.split()) not in held_out]
    if len(train_pool) < len(train_all):
        log.info("left %d eval problems out of the train split", len(train_all) - len(train_pool))
    train_problems = _sample(train_pool, cfg.get("n_train"), train_seed, "train")
    return train_problems, eval_problems
