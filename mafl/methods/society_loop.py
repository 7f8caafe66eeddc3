"""The iteration loop shared by every society method.

Iteration 0 evaluates the untuned society. Iteration k >= 1: the society of iteration k-1 debates the train
problems; each model's fine-tuning set is built from those transcripts (no ground truth); each model is
fine-tuned on its own set, independently; the new society debates the eval problems and is measured.
"""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mafl.config import DebateSettings, FinetuneSettings
from mafl.debate.engine import derive_seed, run_debate
from mafl.debate.prompts import Prompts
from mafl.debate.society import Society
from mafl.finetune.sets import FinetuneSet, build_society_sets, merge_sets
from mafl.rundir import Stages, atomic_write_json, read_jsonl
from mafl.summary import print_iteration, print_summary
from mafl.session import Session, open_session

log = logging.getLogger("mafl")


def make_society(cfg: DictConfig, debate: DebateSettings) -> Society:
    """multiagent_ft: 2N models (N without critics); majority_ft and the single-model ablation: one shared model."""
    shared = cfg.method.name == "majority_ft" or bool(cfg.method.get("single_model", False))
    return Society(agents=debate.agents, critics=debate.critics and debate.rounds > 1, shared=shared)


def build_sets(session: Session, society: Society, transcripts, seed: int) -> dict[str, FinetuneSet]:
    ft = session.finetune
    sets = build_society_sets(transcripts, session.task, society.agents, ft.critic_w, seed=seed,
                              critics=society.critics, max_examples=ft.max_examples)
    if society.shared:
        return {"model": merge_sets(sets.values(), name="model", seed=seed, max_examples=ft.max_examples)}
    return sets


def finetune_society(session: Session, society: Society, sets: dict[str, FinetuneSet], iteration: int) -> dict:
    """Fine-tune every model of the society on its own set; returns {model: result json}."""
    from mafl.finetune.trainer import finetune_model

    ft, cfg = session.finetune, session.cfg
    it_dir = session.run_dir / f"iter_{iteration}"
    results = {}
    for k, model in enumerate(society.models):
        out = it_dir / "models" / model
        record = it_dir / "models" / f"{model}.json"
        if out.exists() and record.exists():
            results[model] = OmegaConf.to_container(OmegaConf.load(record))
            continue
        session.release_backend()  # fine-tuning loads its own copy of the base model
        init = society.weights.get(model) if ft.init == "previous" else None
        log.info("fine-tuning %s (%d examples, %d/%d)", model, len(sets[model]), k + 1, len(society.models))
        res = finetune_model(
            session.base_path, sets[model], out, mode=ft.mode, lora=ft.lora, train=ft.train, init_adapter=init,
            seed=derive_seed(cfg.seed, iteration, model), device=cfg.device, dtype=cfg.model.dtype,
            chat_template=cfg.model.get("chat_template"),
        )
        results[model] = res.to_json()
        atomic_write_json(record, results[model])
        session.tracker.log_metrics({f"finetune/{model}/examples": len(sets[model]),
                             f"finetune/{model}/final_loss": (res.losses[-1] if res.losses else None)},
                            step=iteration)
    return results


def run_society_loop(cfg: DictConfig, run_dir: Path, debate: DebateSettings, finetune: FinetuneSettings) -> dict:
    with open_session(cfg, run_dir, debate, finetune) as session:
        society = make_society(cfg, debate)
        stages = Stages(run_dir)
        for k in range(finetune.iterations + 1):
            it_dir = run_dir / f"iter_{k}"
            if k > 0:
                train_tx = run_debate(
                    session.backend(society), session.task, session.train, society, debate, session.prompts,
                    seed=derive_seed(cfg.seed, "train", k), out_dir=it_dir / "train",
                    progress=session.progress, desc=f"iteration {k}: debate (train)")
                sets_dir = it_dir / "sets"
                if stages.done(f"iter_{k}.sets"):
                    sets = {m: FinetuneSet.load(sets_dir / f"{m}.jsonl", name=m) for m in society.models}
                else:
                    sets = build_sets(session, society, train_tx, seed=derive_seed(cfg.seed, "sets", k))
                    for name, s in sets.items():
                        s.save(sets_dir / f"{name}.jsonl")
                    atomic_write_json(sets_dir / "report.json", {n: s.report() for n, s in sets.items()})
                    stages.mark(f"iter_{k}.sets")
                ft_results = finetune_society(session, society, sets, k)
                session.record_finetune(k, {n: s.report() for n, s in sets.items()}, ft_results)
                society.weights = {m: str(it_dir / "models" / m) for m in society.models}
            eval_tx = run_debate(
                session.backend(society), session.task, session.eval, society, debate, session.prompts,
                seed=derive_seed(cfg.seed, "eval"), out_dir=it_dir / "eval",
                progress=session.progress, desc=f"iteration {k}: debate (eval)")
            records = session.measure(eval_tx, society, iteration=k, split="eval")
            print_iteration(k, records)
        results = session.write_results()
        print_summary(results)
        return results
