"""``mafl diagnose [key=value ...]``: debate held-out problems with a society and diagnose its last round.

The command line is ``mafl``'s (the same Hydra config: model, dataset, dataset.split, debate, backend, method,
seed, ...) plus the ``diagnose.*`` keys:

* ``diagnose.n``: the first n problems of the run's eval problems (``dataset.split=dev``: of the dev split);
  default all of them;
* ``diagnose.out``: the folder of the diagnosis (default ``diagnose/<the overrides>``): the debate
  (``debate/``, checkpointed by chunk like a run's), the fresh round-1 samples (``fresh/``), ``turns.jsonl`` (a row
  per problem and agent), ``diagnosis.json`` and ``diagnosis.md``; the same command continues a stopped diagnosis,
  and a folder holding another configuration's diagnosis is refused;
* ``diagnose.run`` and ``diagnose.iteration``: diagnose the society of a run's iteration (default its last with
  models): the run's saved config, with the command line's ``key=value`` changes of existing keys
  (``dataset.split=dev``), and that iteration's fine-tuned weights.

The society debates with the engine (:func:`mafl.debate.engine.run_debate`); an extra one-round debate of the same
problems, with another seed, gives each agent an independent round-1 sample; then the probes are scored
(``backend.score``) and every statistic of :mod:`mafl.diagnose.probe` is printed per round-1 agreement pattern.
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from mafl.errors import ConfigError, RunError
from mafl.run_folder import RunFolder

KEYS = ("n", "out", "run", "iteration")
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")  # mafl's config tree (the one ``mafl`` composes)
USAGE = "usage: mafl diagnose [key=value ...] [diagnose.n=N] [diagnose.out=DIR] [diagnose.run=RUN [diagnose.iteration=K]]"


def split_args(argv: Sequence[str]) -> tuple[dict, list[str]]:
    """(the ``diagnose.*`` keys, the other overrides); a ConfigError for an unknown ``diagnose.`` key."""
    options, overrides = {}, []
    for arg in argv:
        if arg.startswith("diagnose."):
            key, sep, value = arg[len("diagnose."):].partition("=")
            if not sep or key not in KEYS:
                raise ConfigError(f"diagnose.{key}: not a diagnose key (known: {', '.join(KEYS)}), "
                                  "written diagnose.<key>=<value>")
            options[key] = value
        else:
            overrides.append(arg)
    for key in ("n", "iteration"):
        if key in options:
            if not options[key].isdigit() or (key == "n" and int(options[key]) < 1):
                raise ConfigError(f"diagnose.{key}: must be an integer >= {1 if key == 'n' else 0} "
                                  f"(got {options[key]!r})")
            options[key] = int(options[key])
    if "iteration" in options and "run" not in options:
        raise ConfigError("diagnose.iteration: needs diagnose.run (the run whose iteration to diagnose)")
    return options, overrides


def compose_config(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    if not any(o.split("=", 1)[0].lstrip("+~") == "logger" for o in overrides):
        overrides = [*overrides, "logger=none"]  # a diagnosis is no experiment to track
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:  # a bad override: its parse or composition error
        raise ConfigError(" ".join(str(e).split()).split(" Config search path")[0]) from None


def saved_run_config(run: Path, overrides: list[str]) -> DictConfig:
    """A run's saved config with ``key=value`` changes of keys it has."""
    import yaml

    saved = run / "config.yaml"
    if not saved.exists():
        raise ConfigError(f"diagnose.run: {run} holds no run (no config.yaml)")
    cfg = OmegaConf.load(saved)
    for override in overrides:
        key, sep, value = override.partition("=")
        node = OmegaConf.select(cfg, key, default="__missing__") if sep else "__missing__"
        if node == "__missing__" or OmegaConf.is_config(node):
            raise ConfigError(f"{override}: with diagnose.run, only key=value changes of the run's own settings "
                              "(e.g. dataset.split=dev) apply")
        OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
    return cfg


def run_weights(run: Path, iteration: int | None, models: list[str]) -> tuple[int, dict[str, str]]:
    """(iteration, {model: its weights}) of a run's iteration (default: its last with models; 0: untuned)."""
    if iteration is None:
        iteration = max((k for k, folder in RunFolder(run).iterations() if (folder / "models").is_dir()), default=0)
    if iteration == 0:
        return 0, {}
    folder = RunFolder(run).models(iteration)
    missing = [m for m in models if not (folder / m).is_dir()]
    if missing:
        raise ConfigError(f"diagnose.iteration: {folder} holds no weights for {', '.join(missing)}")
    return iteration, {m: str((folder / m).resolve()) for m in models}


def default_out(options: dict, overrides: list[str]) -> Path:
    """``diagnose/<the overrides>``, named as ``mafl`` names its run folders (``default`` when there are none)."""
    parts = sorted([*(o for o in overrides if not o.startswith("logger=")),
                    *(f"diagnose.{k}={v}" for k, v in options.items() if k != "out")])
    return Path("diagnose") / (",".join(parts).replace("/", "_") or "default")


def diagnose(argv: Sequence[str]) -> dict:
    """Run the diagnosis the command line asks for; returns what ``diagnosis.json`` holds."""
    from mafl.pipeline import validate
    from mafl.methods.society import make_society, start_weights
    from mafl.pipeline import prepare_run_dir
    from mafl.progress import check_verbose, console_session

    options, overrides = split_args(argv)
    run = Path(options["run"]).expanduser().resolve() if "run" in options else None
    cfg = saved_run_config(run, overrides) if run is not None else compose_config(overrides)
    out = Path(options.get("out") or default_out(options, overrides)).expanduser().resolve()
    with open_dict(cfg):
        cfg.run_dir = str(out)
        cfg.resume = True
        if run is not None:
            cfg.logger = {"name": "none"}
    settings = validate(cfg)
    if settings.society.mixed:
        raise ConfigError("society.models: mafl diagnose does not diagnose a mixed society yet")
    if settings.debate.rounds < 2:
        raise ConfigError(f"debate.rounds: the diagnosis needs a later round to diagnose (got {settings.debate.rounds} "
                          f"with method={settings.method.name})")
    society = make_society(settings)
    iteration = None
    if run is not None:
        iteration, society.weights = run_weights(run, options.get("iteration"), society.models)
    else:
        society.weights = start_weights(settings, society)
    with open_dict(cfg):
        cfg.diagnose = {"n": options.get("n"), "run": str(run) if run else None, "iteration": iteration}
    prepare_run_dir(cfg, out)
    command = "mafl diagnose " + " ".join(shlex.quote(a) for a in argv)
    with console_session(check_verbose(cfg)):
        return run_diagnosis(out, settings, society, n=options.get("n"), command=command)


def run_diagnosis(out: Path, settings, society, *, n: int | None, command: str) -> dict:
    from mafl.backends.base import ScoringUnavailable
    from mafl.debate.engine import derive_seed, run_debate
    from mafl.debate.society import readers
    from mafl.diagnose.probe import add_probes, pattern_table, probe_requests, turn_rows
    from mafl.diagnose.table import copy_position_table, markdown_table
    from mafl.metrics.likelihood import score_all
    from mafl.progress import line
    from mafl.rundir import atomic_write_json, atomic_write_jsonl, atomic_write_text
    from mafl.session import open_session

    debate = settings.debate
    with open_session(out, settings) as session:
        problems = session.eval[:n] if n else session.eval
        task, prompts = session.task, session.prompts
        backend = session.generation.backend(society, stage="diagnose")
        transcripts = run_debate(backend, task, problems, society, debate, prompts,
                                 seed=derive_seed(settings.seed, "diagnose"), out_dir=out / "debate",
                                 desc="diagnose: debate")
        fresh = run_debate(backend, task, problems, society, replace(debate, rounds=1), prompts,
                           seed=derive_seed(settings.seed, "diagnose", "fresh"), out_dir=out / "fresh",
                           desc="diagnose: fresh round-1 samples")
        reads = readers(debate.agents, debate.topology, debate.adjacency)
        rows = turn_rows(task, transcripts, fresh, reads, debate.max_others)

        def summary_writer(agent: int, round: int):
            if debate.summarizer == "self":
                return society.adapter(society.speaker(agent, round))
            return society.base(agent)

        unavailable = None
        try:
            requests, keys = probe_requests(task, transcripts, prompts, reads, debate.max_others, society.adapter,
                                            summary_writer)
            if getattr(backend, "tokenizer", None) is None:
                raise ScoringUnavailable("the backend has no local tokenizer to locate the answer's tokens")
            scores = score_all(backend, requests, chunk_size=64, desc="diagnose: probes")
            add_probes(rows, keys, scores, backend.tokenizer)
        except (ScoringUnavailable, ValueError) as e:
            unavailable = str(e)
            line(f"diagnose: the probabilities are not measured: {unavailable}")
    table = pattern_table(rows)
    result = {"command": command, "problems": len(problems), "agents": debate.agents, "rounds": debate.rounds,
              "summarize": debate.summarize, "table": table, "unavailable": unavailable}
    atomic_write_jsonl(out / "turns.jsonl", (r.to_json() for r in rows))
    atomic_write_json(out / "diagnosis.json", result)
    text = markdown_table(table)
    positions = copy_position_table(table)
    if positions:
        text += "\n\n" + positions
    atomic_write_text(out / "diagnosis.md", f"`{command}`\n\n{text}\n")
    print(text)
    print(f"diagnosis: {out / 'diagnosis.json'}")
    return result


def main(argv: Sequence[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE + "\n\n" + __doc__.split("\n\n", 1)[1])
        return 0
    try:
        diagnose(argv)
    except ConfigError as e:
        print(f"mafl diagnose: bad config: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"mafl diagnose: {e}", file=sys.stderr)
        return 1
    return 0
