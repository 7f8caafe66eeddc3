"""The ``mafl`` command: a thin Hydra ``main()`` over :func:`mafl.pipeline.run`, plus four sub-commands.

    mafl [key=value ...]            run an experiment (``-m``/``--multirun`` for a sweep)
    mafl report FOLDER... [--plot]  tables (and plots) from run or sweep folders
    mafl build-tiny [--rebuild]     build (or rebuild) the embedded tiny model
    mafl serve [FOLDER] [...]       an OpenAI-compatible server over a run's models (mafl/serve)
    mafl diagnose [key=value ...]   what the critics do with round 1, per agreement pattern (mafl/diagnose)
"""
from __future__ import annotations

import errno
import logging
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mafl.errors import ConfigError, RunError
from mafl.methods import tuned_iterations  # noqa: F401  (registers ${mafl_tuned_iterations:...})

# the config tree ships inside the package (mafl/conf), so an installed mafl runs from any folder
CONF_DIR = str(Path(__file__).resolve().parent / "conf")


RUN_NAME_BYTES = 160  # a folder name may have 255 bytes (Linux, macOS); a sweep's job prefixes its number


def run_name(override_dirname: str) -> str:
    """The run folder of a command line: its overrides, or ``default`` when there are none. Overrides longer than
    :data:`RUN_NAME_BYTES` are cut, and the sha256 of the whole of them is added, so that the name stays a name the
    file system takes and two command lines still get two folders."""
    name = override_dirname.replace("/", "_") or "default"
    if len(name.encode("utf-8")) <= RUN_NAME_BYTES:
        return name
    import hashlib

    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
    head = name.encode("utf-8")[: RUN_NAME_BYTES - len(digest) - 1].decode("utf-8", "ignore")
    return f"{head}-{digest}"


if not OmegaConf.has_resolver("mafl_run_name"):
    OmegaConf.register_new_resolver("mafl_run_name", run_name)


# a file that cannot be written (or read) for a reason of the machine's, not mafl's: the disk, its mode, the name
FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
REFUSED = {errno.EROFS, errno.EACCES, errno.EPERM}


def disk_failure(e: BaseException) -> str | None:
    """One line for a disk that is full or will not take the write (read-only, not ours, a name too long): the
    OSError in ``e``'s chain of causes, with what to do; None when there is none."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in FULL | REFUSED | {errno.ENAMETOOLONG}:
            where = f"{e.filename}: " if e.filename else ""
            what = (f"{where}{e.strerror or e} (errno {e.errno})"
                    if e.strerror else f"{type(e).__name__}: {' '.join(str(e).split())[:200]}")
            todo = ("free some space" if e.errno in FULL else
                    "use a shorter run_dir" if e.errno == errno.ENAMETOOLONG else
                    "point MAFL_HOME (the model cache) or run_dir at a folder this user can write")
            return f"{what}; the finished stages are kept: {todo}, and run the same command again"
        e = e.__cause__ or e.__context__
    return None


def failure_line(e: BaseException) -> tuple[str, int] | None:
    """The one line (and exit status) that ends a run stopped by ``e``, or None for an error that is not one
    of mafl's own (a bug: its traceback is shown)."""
    from mafl.tasks.loading import DatasetError

    if isinstance(e, ConfigError):
        return f"bad config: {e}", 2
    if isinstance(e, (RunError, DatasetError)):  # the finished stages are kept: the same command resumes
        return str(e), 1
    disk = disk_failure(e)
    if disk is not None:
        return disk, 1
    return None


def _log_to_files(message: str) -> None:
    """``message`` in the run's log file (Hydra's), not again on the console."""
    record = logging.getLogger("mafl").makeRecord("mafl", logging.ERROR, __file__, 0, message, (), None)
    quiet, logging.raiseExceptions = logging.raiseExceptions, False  # a full disk takes no log line either: say nothing
    try:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)
    finally:
        logging.raiseExceptions = quiet


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig):
    from mafl.pipeline import run

    try:
        return run(cfg)
    except Exception as e:  # noqa: BLE001 - one line for mafl's own errors; a bug keeps its traceback
        found = failure_line(e)
        if found is None:
            raise
        message, status = found
        _log_to_files(message)
        if cfg.get("verbose") is True:
            traceback.print_exc()
        print(f"mafl: {message}", file=sys.stderr)
        sys.exit(status)


def cli() -> None:
    args = sys.argv[1:]
    if args[:1] == ["report"]:
        from mafl.reporting.report import report_main

        report_main(args[1:])  # prints the report (and writes plots); errors exit non-zero
        sys.exit(0)
    if args[:1] == ["build-tiny"]:
        from mafl.tiny.__main__ import main as tiny_main

        sys.exit(tiny_main(args[1:]))
    if args[:1] == ["serve"]:
        from mafl.serve.cli import main as serve_main

        sys.exit(serve_main(args[1:]))
    if args[:1] == ["diagnose"]:
        from mafl.diagnose.command import main as diagnose_main

        sys.exit(diagnose_main(args[1:]))
    main()
