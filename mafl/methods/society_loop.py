"""The iteration loop shared by every method.

Iteration 0 evaluates the untuned society (or the society of ``method.weights``). Iteration k >= 1: the method's
``train_sets`` builds each model's fine-tuning set with the society of iteration k-1 (by default: it debates the
train problems, and each model's set is cut from those transcripts, with no ground truth); the sets are optionally
mixed with general data (``finetune.mix_general``); each model is fine-tuned on its own set, independently (with
``finetune.global_first``: after one shared fine-tune on all the sets, which every model then starts from); the
new society debates the eval problems and is measured.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Callable

from mafl.config import Settings
from mafl.debate.engine import derive_seed, run_debate
from mafl.debate.society import Society
from mafl.finetune.jobs import FinetuneJob
from mafl.finetune.pairs import PairSet, build_society_pairs, merge_pairs, pairs_path
from mafl.finetune.rl_prompts import PromptSet, build_society_prompts, merge_prompts, prompts_path
from mafl.finetune.sets import FinetuneSet, build_society_sets, merge_sets
from mafl.methods.society import make_society, start_weights
from mafl.rundir import atomic_write_json, read_stage_file
from mafl.progress import line
from mafl.summary import print_iteration, print_summary, sets_line
from mafl.session import Session, open_session

log = logging.getLogger("mafl")

GLOBAL = "global"  # the shared model of global-to-local fine-tuning (finetune.global_first)

# (session, society of iteration k-1, k) -> {model: its fine-tuning set}
TrainSets = Callable[[Session, Society, int], dict[str, FinetuneSet]]
# (session, society) -> the function that answers one chunk of eval problems (mafl.debate.engine.run_debate)
EvalChunk = Callable[[Session, Society], Callable]


def build_sets(session: Session, society: Society, transcripts, seed: int) -> dict[str, FinetuneSet]:
    """Each model's set and, when the objective needs them, its preference pairs (``set.pairs``) or its GRPO
    prompts (``set.prompts``)."""
    ft = session.finetune
    sets = build_society_sets(transcripts, session.task, society.agents, ft.critic_w, seed=seed,
                              critics=society.critics, max_examples=ft.max_examples,
                              min_agreement=ft.min_agreement)
    pairs = build_society_pairs(transcripts, session.task, society.agents, seed=seed, critics=society.critics,
                                max_pairs=ft.max_pairs, min_agreement=ft.min_agreement) if ft.uses_pairs else None
    prompts = build_society_prompts(transcripts, session.task, society.agents, ft.reward, seed=seed,
                                    critics=society.critics, max_prompts=ft.max_prompts,
                                    min_agreement=ft.min_agreement) if ft.uses_prompts else None
    if society.shared:
        merged = merge_sets(sets.values(), name="model", seed=seed, max_examples=ft.max_examples)
        if pairs is not None:
            merged.pairs = merge_pairs(pairs.values(), name="model", seed=seed, max_pairs=ft.max_pairs)
        if prompts is not None:
            merged.prompts = merge_prompts(prompts.values(), name="model", seed=seed, max_prompts=ft.max_prompts)
        return {"model": merged}
    for name, s in sets.items():
        s.pairs = pairs[name] if pairs is not None else None
        s.prompts = prompts[name] if prompts is not None else None
    return sets


def debate_train_sets(session: Session, society: Society, iteration: int) -> dict[str, FinetuneSet]:
    """The society debates the train problems (``iter_k/train``); each model's set is its slice of the debate."""
    cfg = session.settings
    with session.run.timed(iteration, "train_debate"):
        transcripts = run_debate(
            session.generation.backend(society, stage=session.run.stage(iteration, "train")), session.task,
            session.train, society, session.debate, session.prompts,
            seed=derive_seed(cfg.seed, "train", iteration), out_dir=session.run.split(iteration, "train"),
            progress=session.progress, desc=f"iteration {iteration}: debate (train)")
    return build_sets(session, society, transcripts, seed=derive_seed(cfg.seed, "sets", iteration))


def global_first(session: Session, society: Society) -> bool:
    return session.finetune.global_first and not society.shared


def set_names(session: Session, society: Society) -> list[str]:
    """The models fine-tuned in one iteration, in order (the shared global model first)."""
    return ([GLOBAL] if global_first(session, society) else []) + society.models


def iteration_sets(session: Session, society: Society, iteration: int,
                   train_sets: TrainSets) -> dict[str, FinetuneSet]:
    """Every model's set of ``iteration``, kept in ``iter_k/sets`` (read back when a run resumes)."""
    sets_dir = session.run.sets(iteration)
    names = set_names(session, society)
    if session.run.sets_done(iteration):
        sets = saved_sets(sets_dir, names)
        if sets is not None:
            return sets
    with session.run.timed(iteration, "sets"):  # the train debate inside it is timed on its own
        return _iteration_sets(session, society, iteration, train_sets, sets_dir)


def saved_sets(sets_dir: Path, names: list[str]) -> dict[str, FinetuneSet] | None:
    """Every model's set (with its pairs and prompts where they were saved) as a finished sets stage left them, or
    None when one is missing or does not parse (cut short, edited): then the stage is made again, after a one-line
    warning naming the file (:func:`mafl.rundir.read_stage_file`)."""
    sets = {}
    for m in names:
        path = sets_dir / f"{m}.jsonl"
        if not path.exists():
            log.warning("%s is missing though its stage is marked done: the sets are made again", path)
            return None
        found = read_stage_file(path, lambda p, m=m: FinetuneSet.load(p, name=m))
        for extra, kind in ((pairs_path(sets_dir, m), PairSet), (prompts_path(sets_dir, m), PromptSet)):
            if found is not None and extra.exists():
                part = read_stage_file(extra, lambda p, kind=kind, m=m: kind.load(p, name=m))
                if kind is PairSet:
                    found.pairs = part
                else:
                    found.prompts = part
                found = found if part is not None else None
        if found is None:
            return None
        sets[m] = found
    return sets


def _iteration_sets(session, society, iteration, train_sets, sets_dir) -> dict[str, FinetuneSet]:
    from mafl.finetune.mixing import load_general, mix_general

    cfg = session.settings
    sets = train_sets(session, society, iteration)
    if global_first(session, society):
        seed = derive_seed(cfg.seed, "sets", iteration)
        merged = merge_sets(sets.values(), name=GLOBAL, seed=seed, max_examples=session.finetune.max_examples)
        if session.finetune.uses_pairs:
            merged.pairs = merge_pairs([s.pairs for s in sets.values() if s.pairs is not None], name=GLOBAL,
                                       seed=seed, max_pairs=session.finetune.max_pairs)
        if session.finetune.uses_prompts:
            merged.prompts = merge_prompts([s.prompts for s in sets.values() if s.prompts is not None], name=GLOBAL,
                                           seed=seed, max_prompts=session.finetune.max_prompts)
        sets = {GLOBAL: merged, **sets}
    mix = session.finetune.mix_general
    if mix is not None:
        general = load_general(mix.path)
        sets = {n: _with_pairs(mix_general(s, general, mix.eta, seed=derive_seed(cfg.seed, "mix", iteration)), s)
                for n, s in sets.items()}
    for name, s in sets.items():
        s.save(sets_dir / f"{name}.jsonl")
        if s.pairs is not None:
            s.pairs.save(pairs_path(sets_dir, name))
        if s.prompts is not None:
            s.prompts.save(prompts_path(sets_dir, name))
    atomic_write_json(sets_dir / "report.json", {n: {**s.report(), "kinds": dict(Counter(e.kind for e in s.examples))}
                                                 for n, s in sets.items()})
    session.run.mark_sets_done(iteration)
    return sets


def _with_pairs(mixed: FinetuneSet, original: FinetuneSet) -> FinetuneSet:
    mixed.pairs, mixed.prompts = original.pairs, original.prompts  # general data mixes into the set only
    return mixed


def init_weights(session: Session, society: Society, model: str, iteration: int) -> str | None:
    """The weights ``model``'s fine-tune starts from (None: the base model)."""
    models_dir = session.run.models(iteration)
    if model == GLOBAL:
        previous = session.run.models(iteration - 1) / GLOBAL
        return str(previous) if session.finetune.init == "previous" and previous.is_dir() else None
    if global_first(session, society):
        return str(models_dir / GLOBAL)
    return society.weights.get(model) if session.finetune.init == "previous" else None


def data_size(objective: str | None, s: FinetuneSet) -> str:
    """What a model trains on, for the console: its examples, its pairs, both, or its prompts."""
    pairs = f"{len(s.pairs) if s.pairs is not None else 0} pairs"
    prompts = f"{len(s.prompts) if s.prompts is not None else 0} prompts"
    return {"dpo": pairs, "sft+dpo": f"{len(s)} examples, {pairs}", "grpo": prompts}.get(objective or "sft",
                                                                                         f"{len(s)} examples")


def finetune_jobs(session: Session, society: Society, sets: dict[str, FinetuneSet],
                  iteration: int) -> list[list[FinetuneJob]]:
    """The iteration's fine-tunes as waves of independent jobs: the shared global model first (its weights are
    where every other model starts), then every model of the society, each from its base (in a mixed society:
    its agent's)."""
    ft, cfg = session.finetune, session.settings
    sets_dir, models_dir = session.run.sets(iteration), session.run.models(iteration)

    def job(model: str) -> FinetuneJob:
        base_path, base = session.generation.base_of(model)  # a mixed society: its agent's base
        return FinetuneJob(
            model=model, set_path=str(sets_dir / f"{model}.jsonl"), out_dir=str(models_dir / model),
            init=init_weights(session, society, model, iteration), seed=derive_seed(cfg.seed, iteration, model),
            base_path=base_path, mode=ft.mode, lora=dict(ft.lora), train=dict(ft.train), device=cfg.device,
            dtype=base.dtype, chat_template=base.chat_template, accelerate=ft.accelerate,
            desc=f"iteration {iteration}: fine-tune {model} ({data_size(ft.objective, sets[model])})",
            objective=ft.objective or "sft", dpo=dict(ft.dpo),
            pairs_path=str(pairs_path(sets_dir, model)) if ft.uses_pairs else None,
            **(grpo_fields(session, prompts_path(sets_dir, model)) if ft.uses_prompts else {}))

    names = set_names(session, society)
    first = [n for n in names if n == GLOBAL]
    return [[job(m) for m in first], [job(m) for m in names if m not in first]] if first else [[job(m) for m in names]]


def grpo_fields(session: Session, path: Path) -> dict:
    """A GRPO job's own fields: its prompts, the trl settings, the reward, and the task that reads the answers."""
    from mafl.tasks import task_options

    ft = session.finetune
    return dict(prompts_path=str(path), grpo=dict(ft.grpo), reward=ft.reward, reward_kwargs=dict(ft.reward_kwargs),
                task=task_options(session.settings.dataset.options))


def finetune_society(session: Session, society: Society, sets: dict[str, FinetuneSet], iteration: int) -> dict:
    """Fine-tune every model of the society on its own set (the global model first) with the run's launcher
    (``finetune.launcher``, see :mod:`mafl.finetune.launchers`); returns {model: record}."""
    from mafl.finetune.launchers import make_launcher, run_waves

    waves = finetune_jobs(session, society, sets, iteration)
    base = None
    if any(not j.done() for wave in waves for j in wave):  # the backend's base model, or its memory freed
        base = session.generation.lend_base()
    launcher = make_launcher(session.finetune, session.run_dir, base_model=base)
    try:
        with session.run.timed(iteration, "finetune"):  # all of them: less than their sum when they run in parallel
            records = run_waves(launcher, waves)
    finally:
        launcher.close()
    for model, record in records.items():
        if record.get("seconds") is not None:
            session.run.set_timing(iteration, f"finetune/{model}", record["seconds"])
        losses = record.get("losses") or []
        session.tracker.log_metrics({f"finetune/{model}/examples": record.get("num_examples"),
                                     f"finetune/{model}/final_loss": losses[-1] if losses else None}, step=iteration)
    return records


def run_society_loop(run_dir: Path, settings: Settings, *,
                     train_sets: TrainSets = debate_train_sets, eval_chunk: EvalChunk | None = None) -> dict:
    """``eval_chunk``: (session, society) -> what answers one chunk of eval problems (default: the debate,
    :func:`mafl.debate.engine.debate_chunk`), e.g. the token-matched majority's sampler."""
    society = make_society(settings)
    society.weights = start_weights(settings, society)
    debate, iterations = settings.debate, settings.finetune.iterations
    with open_session(run_dir, settings) as session:
        chunk_fn = eval_chunk(session, society) if eval_chunk is not None else None
        for k in range(iterations + 1):
            if k > 0:
                sets = iteration_sets(session, society, k, train_sets)
                reports = {n: s.report() for n, s in sets.items()}
                line(sets_line(k, reports))
                ft_results = finetune_society(session, society, sets, k)
                session.record_finetune(k, reports, ft_results)
                society.weights = {m: str(session.run.models(k) / m) for m in society.models}
            with session.run.timed(k, "eval_debate"):
                eval_tx = run_debate(
                    session.generation.backend(society, stage=session.run.stage(k, "eval")), session.task,
                    session.eval, society, debate, session.prompts,
                    seed=derive_seed(settings.seed, "eval"), out_dir=session.run.split(k, "eval"),
                    progress=session.progress, desc=f"iteration {k}: debate (eval)", chunk_fn=chunk_fn)
            with session.run.timed(k, "metrics"):
                records = session.measure(eval_tx, society, iteration=k, split="eval")
            print_iteration(k, records)
        results = session.write_results()
        print_summary(results)
        return results
