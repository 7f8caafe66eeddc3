"""The ``mafl`` command: a thin Hydra ``main()`` over :func:`mafl.pipeline.run`, plus four sub-commands.

    mafl [key=value ...]            run an experiment (``-m``/``--multirun`` for a sweep)
    mafl report FOLDER... [--plot]  tables (and plots) from run or sweep folders
    mafl build-tiny [--rebuild]     build (or rebuild) the embedded tiny model
    mafl serve [FOLDER] [...]       an OpenAI-compatible server over a run's models (mafl/serve)
    mafl diagnose [key=value ...]   what the critics do with round 1, per agreement pattern (mafl/diagnose)
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mafl.errors import ConfigError, RunError
from mafl.methods import tuned_iterations  # noqa: F401  (registers ${mafl_tuned_iterations:...})

# the config tree ships inside the package (mafl/conf), so an installed mafl runs from any folder
CONF_DIR = str(Path(__file__).resolve().parent / "conf")


def run_name(override_dirname: str) -> str:
    """The run folder of a command line: its overrides, or ``default`` when there are none."""
    return override_dirname.replace("/", "_") or "default"


if not OmegaConf.has_resolver("mafl_run_name"):
    OmegaConf.register_new_resolver("mafl_run_name", run_name)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig):
    from mafl.pipeline import run

    try:
        return run(cfg)
    except ConfigError as e:
        logging.getLogger("mafl").error("bad config: %s", e)
        print(f"mafl: bad config: {e}", file=sys.stderr)
        sys.exit(2)
    except RunError as e:  # the finished stages are kept: the same command resumes
        logging.getLogger("mafl").error("%s", e)
        print(f"mafl: {e}", file=sys.stderr)
        sys.exit(1)


def cli() -> None:
    args = sys.argv[1:]
    if args[:1] == ["report"]:
        from mafl.report import report_main

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
