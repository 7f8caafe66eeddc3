"""The fine-tunes of one iteration (2N = 6 LoRA fine-tunes of a society of 3 agents): what loading the base model
once saves, and what fanning them out on Ray costs or gains, as ratios measured in one run.

Prints:
  * the local launcher with one base load for the 6 fine-tunes (finetune.local.share_base=true, the default) vs
    six loads (share_base=false): wall time of each and their ratio;
  * the Ray launcher on a local cluster of ``--workers`` CPUs (one fine-tune per CPU) vs the local launcher one
    after the other (six loads, like each Ray task): wall time of each (Ray's without and with starting the
    cluster) and their ratio.

Each measurement runs in a fresh process, on the same sets (arithmetic questions with worked answers, ``--examples``
per model) and the run's default LoRA settings (conf/finetune/lora.yaml); a first process loads the model once so
that every measurement reads it from the page cache.

    OMP_NUM_THREADS=2 python experiments/benchmarks/finetune_launchers.py [--model tiny] [--examples 64]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODELS = [f"{kind}_{k}" for k in range(3) for kind in ("generator", "critic")]


def make_jobs(args, folder: Path):
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import compose_cfg

    from mafl.pipeline import validate
    from mafl.finetune.jobs import FinetuneJob
    from mafl.finetune.sets import Example, FinetuneSet
    from mafl.model_path import resolve_model_path

    cfg = compose_cfg([f"model={args.model}"] + ([f"model.path={args.model_path}"] if args.model_path else []))
    settings = validate(cfg)
    ft = settings.finetune
    base = resolve_model_path(settings.model, progress=False)
    jobs = []
    for m, model in enumerate(MODELS):
        rng = random.Random(m)
        items = []
        for i in range(args.examples):
            a, b, c = rng.randint(0, 29), rng.randint(0, 29), rng.randint(0, 29)
            items.append(Example(prompt=[{"role": "user", "content": f"What is the result of {a}+{b}*{c}?"}],
                                 response=f"{b}*{c}={b * c}. {a}+{b * c}={a + b * c}. The answer is {a + b * c}.",
                                 problem_id=str(i), correct=True))
        path = FinetuneSet(model, items).save(folder / "sets" / f"{model}.jsonl")
        jobs.append(FinetuneJob(model=model, set_path=str(path), out_dir=str(folder / "models" / model), init=None,
                                seed=m, base_path=base, mode="lora", lora=dict(ft.lora), train=dict(ft.train),
                                dtype=settings.model.dtype, chat_template=settings.model.chat_template))
    return jobs, ft


def run_child(args) -> dict:
    """One measurement in this process: ``--launcher local|local-fresh|ray|load``."""
    from dataclasses import replace

    folder = Path(tempfile.mkdtemp(prefix="mafl-ft-bench-", dir=args.workdir))
    jobs, ft = make_jobs(args, folder)
    if args.launcher == "load":  # warm the page cache
        from mafl.finetune.finetune_one import SharedBase

        with SharedBase(jobs[0].base_path, jobs[0].dtype, jobs[0].chat_template).lend():
            pass
        return {}
    out = {}
    if args.launcher == "ray":
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))}})
        out["cluster_seconds"] = time.perf_counter() - start

        @ray.remote(num_cpus=1)
        def warm(wait: float) -> int:  # each worker imports what a fine-tune imports, as this process has
            import mafl.finetune.finetune_one  # noqa: F401
            import peft  # noqa: F401
            import trl  # noqa: F401

            time.sleep(wait)  # holds its CPU, so the next warm-up goes to another worker
            return os.getpid()

        start = time.perf_counter()
        pids = set(ray.get([warm.remote(1.0) for _ in range(args.workers)]))
        out["warm_seconds"], out["workers"] = time.perf_counter() - start, len(pids)
        ft = replace(ft, launcher="ray", resources={"num_cpus": 1, "num_gpus": 0})
    else:
        ft = replace(ft, launcher_options={"local": {"share_base": args.launcher == "local"}})
    from mafl.finetune.launchers import make_launcher

    launcher = make_launcher(ft, folder)
    start = time.perf_counter()
    records = launcher.run(jobs)
    out["seconds"] = time.perf_counter() - start
    out["train_seconds"] = sum(r["train_runtime"] for r in records)
    out["loads"] = launcher.shared.loads if getattr(launcher, "shared", None) is not None else len(jobs)
    shutil.rmtree(folder, ignore_errors=True)
    return out


def child(args, launcher: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--launcher", launcher, "--model", args.model, "--examples",
           str(args.examples), "--workers", str(args.workers), "--workdir", args.workdir,
           *(["--model-path", args.model_path] if args.model_path else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="a conf/model preset")
    ap.add_argument("--model-path", default=None, help="a model folder instead of the preset's")
    ap.add_argument("--examples", type=int, default=64, help="examples in each model's set")
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--launcher", default="local")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="mafl-ft-bench-")
    child(args, "load")
    shared = child(args, "local")
    fresh = child(args, "local-fresh")
    ray = child(args, "ray")
    n = len(MODELS)
    print(f"model={args.model}: {n} LoRA fine-tunes of {args.examples} examples each (conf/finetune/lora.yaml), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"local, one base load    : {shared['seconds']:7.1f} s  ({shared['loads']} load(s); "
          f"{shared['train_seconds']:.1f} s in trainer.train)")
    print(f"local, one load per model: {fresh['seconds']:7.1f} s  ({fresh['loads']} loads; "
          f"{fresh['train_seconds']:.1f} s in trainer.train)")
    print(f"six loads / one load     : {fresh['seconds'] / shared['seconds']:.2f}x the wall time; outside "
          f"trainer.train (loading, set-up, saving): {fresh['seconds'] - fresh['train_seconds']:.1f} s vs "
          f"{shared['seconds'] - shared['train_seconds']:.1f} s")
    print(f"ray, {ray['workers']} workers           : {ray['seconds']:7.1f} s  (after {ray['cluster_seconds']:.1f} s "
          f"to start the cluster and {ray['warm_seconds']:.1f} s for its workers to import trl, as this process had)")
    cold = ray["seconds"] + ray["cluster_seconds"] + ray["warm_seconds"]
    print(f"sequential / ray         : {fresh['seconds'] / ray['seconds']:.2f}x  "
          f"(counting the cluster's start and imports: {fresh['seconds'] / cold:.2f}x)")
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
