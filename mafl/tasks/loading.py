"""Problems read from files: :class:`FileTask`, the base of every task whose problems are dataset rows.

    train, eval = task.load_problems(cfg.dataset)      # or mafl.tasks.load_splits(cfg.dataset)

Where rows come from: the JSONL files ``train_file`` and ``eval_file`` (under ``data_dir`` when it is set; the
config fills it from ``MAFL_DATA_DIR``), or, when ``data_dir`` is null and the config has a ``hub`` entry, the
Hugging Face hub through ``datasets``. (A task that makes its problems, as Arithmetic does, overrides
``load_problems``.)

Rows become Problems through the task (``Task.problem``); ids are stable: MATH's ``unique_id`` when rows
have one, else ``<name>/<file stem or split>/<row index>`` (e.g. ``gsm8k/test/17``). A task may first filter
rows by their meta (``FileTask.row_filter``: MATH's ``levels`` and ``subjects``; rows left out are not checked
further). A malformed row (bad JSON, missing or empty field, no gold answer, over :data:`MAX_ROW_BYTES`
characters) stops loading with an error naming
file, line and field; with ``skip_bad_rows: true`` such rows are counted and reported in a logged warning instead.

Sampling: ``n_train``/``n_eval`` problems (null: all) taken from a seeded shuffle of each split, kept in file
order; a smaller n gives a subset of a larger one. Train never holds an eval problem (same id or question).
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from mafl.errors import ConfigError
from mafl.rundir import iter_jsonl
from mafl.tasks.base import BadRow, Problem, Task

log = logging.getLogger(__name__)


# the longest row read from a dataset file: 50 times the longest problem of GSM8K or MATH with its solution. A
# longer one (a file that is not a dataset, a runaway line) is a bad row, never handed to a tokenizer (which aborted
# the process on a 50 MB line)
MAX_ROW_BYTES = 1_000_000


class DatasetError(ValueError):
    """Data that cannot be loaded as configured: a missing file, a malformed row, an impossible sample."""


def _rows(cfg: Mapping, split: str) -> tuple[str, Iterator[tuple[int, dict, str]], list[str], str] | None:
    """(source label, rows as (index, row, where), bad-row list, the source's full name) of one split, or None
    when it has none."""
    key = f"{split}_file"
    data_dir, hub = cfg.get("data_dir"), cfg.get("hub")
    skip = bool(cfg.get("skip_bad_rows", False))
    bad: list[str] = []
    if data_dir is None and hub:
        hub_split = hub.get(f"{split}_split")
        if hub_split is None:
            return None
        return str(hub_split), _hub_rows(hub, hub_split), bad, f"{hub.get('path')} split {hub_split}"
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
    def malformed(reason: str) -> None:
        if not skip:
            raise DatasetError(reason)
        bad.append(reason)

    rows = ((lineno - 1, row, f"{path}:{lineno}") for lineno, row in iter_jsonl(path, malformed, MAX_ROW_BYTES))
    return path.stem, rows, bad, str(path)


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


def _problems(task: FileTask, cfg: Mapping, split: str) -> list[Problem]:
    found = _rows(cfg, split)
    if found is None:
        return []
    label, rows, bad, source = found
    prefix = cfg.get("name") or task.name
    keep = task.row_filter(cfg)
    problems, seen = [], 0
    for index, row, where in rows:
        seen += 1
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
    if not seen and not bad:
        raise DatasetError(f"{source}: no rows (the {split} problems are read from it): fill it, or point "
                           f"dataset.{split}_file at a JSONL file of problems")
    return problems


def _sample(problems: list[Problem], n: int | None, seed: object, split: str) -> list[Problem]:
    if n is None:
        return problems
    if int(n) > len(problems):
        raise DatasetError(f"dataset.n_{split}={n} but only {len(problems)} problems are available "
                           f"(after filters); set dataset.n_{split}: null for all of them")
    order = list(range(len(problems)))
    random.Random(f"{seed}/{split}").shuffle(order)
    return [problems[i] for i in sorted(order[: int(n)])]


class FileTask(Task):
    """A task whose problems are the rows of JSONL files (or of a hub dataset); see the module doc."""

    config_keys = ("data_dir", "train_file", "eval_file", "hub", "skip_bad_rows")

    def row_filter(self, cfg: Mapping) -> Callable[[dict], bool]:
        """Whether a row, by its ``row_meta``, is one of the dataset's problems (all rows by default)."""
        return lambda meta: True

    def check_config(self, cfg: Mapping) -> None:
        super().check_config(cfg)
        data_dir = cfg.get("data_dir")
        for key in ("train_file", "eval_file"):
            name = cfg.get(key)
            if name is None or (key == "train_file" and name == "???"):  # a run without train problems needs none
                continue
            path = Path(data_dir) / name if data_dir else Path(name)
            if (data_dir or not cfg.get("hub")) and not path.exists():
                raise ConfigError(f"dataset.{key}: no such file {path}"
                                  + (" (dataset.data_dir / MAFL_DATA_DIR)" if data_dir else ""))

    def load_problems(self, cfg: Mapping) -> tuple[list[Problem], list[Problem]]:
        eval_seed, train_seed = cfg.get("eval_seed", 0), cfg.get("train_seed", 0)
        eval_pool = _problems(self, cfg, "eval")
        eval_problems = _sample(eval_pool, cfg.get("n_eval"), eval_seed, "eval")
        # train never sees an eval problem, even if both come from one file
        held_out = {p.id for p in eval_problems} | {" ".join(p.question.split()) for p in eval_problems}
        train_all = _problems(self, cfg, "train")
        train_pool = [p for p in train_all if p.id not in held_out and " ".join(p.question.split()) not in held_out]
        if len(train_pool) < len(train_all):
            log.info("left %d eval problems out of the train split", len(train_all) - len(train_pool))
        if cfg.get("split", "eval") == "dev":  # the dev problems come out of the train pool, never the eval file
            eval_problems = _sample(train_pool, cfg.get("n_eval"), eval_seed, "dev")
            dev = {p.id for p in eval_problems}
            train_pool = [p for p in train_pool if p.id not in dev]
        train_problems = _sample(train_pool, cfg.get("n_train"), train_seed, "train")
        return train_problems, eval_problems
