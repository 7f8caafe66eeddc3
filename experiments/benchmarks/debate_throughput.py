"""Debate throughput and memory of mafl's batched engine against the official code's way.

Prints, in one run on the same model and problems:
  * debate tokens/s of mafl (every agent and problem of a round in one batched backend call) vs a loop that
    makes one call per agent per problem (as the public debate scripts do), and their ratio (goal >= 20x);
  * peak memory (RSS) of a process holding the society (one base model + 2N LoRA adapters) debating, vs a
    process holding one model debating, and their ratio (goal <= 1.3x);
  * generation vs raw forward: every batch the batched debate generated is replayed as bare forward passes of the
    same model on the same shapes (a prefill of the batch's padded prompts, then one KV-cached step per generated
    position, greedy, no sampling and no stopping), and the debate's generated tokens/s is given as a share of
    that raw throughput (goal >= 60%); also the share counting every position of every row, finished or not,
    which separates generate()'s own overhead from the rows that stopped early and wait for the longest.

    python experiments/benchmarks/debate_throughput.py [--problems 60] [--agents 3] [--model tiny] [key=value ...]

The trailing Hydra overrides set the debate for every child, e.g. a packaged model at a size a CPU finishes:
``--model smollm2 --problems 8 --loop-problems 2 --batch-size 32 dataset.low=0 dataset.high=4
debate.max_new_tokens=128 debate.summary_max_new_tokens=96``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_adapters(base_path: str, names: list[str], out: Path) -> dict[str, str]:
    """LoRA adapters with random (non-zero) weights, one per model of the society."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = {}
    for k, name in enumerate(names):
        torch.manual_seed(k)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_path),
                               LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False))
        for p in model.parameters():
            if p.requires_grad:
                p.data.mul_(0.01)  # a small change: the models still speak sensibly
        model.save_pretrained(out / name)
        paths[name] = str(out / name)
    return paths


def setup(args):
    from omegaconf import OmegaConf

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from helpers import compose_cfg

    from mafl.pipeline import validate
    from mafl.tasks.prompts import Prompts
    from mafl.model_path import resolve_model_path
    from mafl.tasks import get_task, load_splits

    extra = [f"model.path={args.model_path}"] if args.model_path else []
    cfg = compose_cfg(extra + [f"model={args.model}", f"debate.agents={args.agents}", f"dataset.n_eval={args.problems}",
                       "dataset.n_train=1", f"debate.chunk_size={args.problems}", *args.overrides])
    debate = validate(cfg).debate
    _, problems = load_splits(cfg.dataset)
    return cfg, debate, Prompts.from_cfg(cfg.dataset.prompts), get_task("arithmetic"), problems, \
        resolve_model_path(cfg.model), OmegaConf


def run_one(args) -> dict:
    """One debate in this process: ``--mode batched|loop`` with ``--society`` (2N adapters) or the base model."""
    from mafl.backends.hf import HFBackend
    from mafl.debate.engine import debate_chunk
    from mafl.debate.society import Society

    cfg, debate, prompts, task, problems, base_path, _ = setup(args)
    society = Society(agents=debate.agents)
    backend = HFBackend(base_path, batch_size=args.batch_size)
    if args.society:
        society.weights = make_adapters(base_path, society.models, Path(args.workdir))
        for name, path in society.weights.items():
            backend.load_adapter(name, path)

    tokens = 0
    original = backend.generate
    batches = []  # (route, batch size, prompt width, generated positions, useful tokens, seconds)
    if args.mode == "batched":
        generate_batch = backend._generate_batch

        def recording(requests, prompts, routes, index):
            start = time.perf_counter()
            out = generate_batch(requests, prompts, routes, index)
            seconds = time.perf_counter() - start
            steps = max(c.num_tokens for c in out)
            batches.append((routes[0], len(prompts), max(len(p) for p in prompts), steps,
                            sum(c.num_tokens for c in out), seconds))
            return out

        backend._generate_batch = recording

    def counting(requests):
        nonlocal tokens
        out = original(requests)
        tokens += sum(c.num_tokens for c in out)
        return out

    backend.generate = counting
    start = time.perf_counter()
    if args.mode == "batched":
        debate_chunk(backend, task, problems, society, debate, prompts, seed=0)
    else:  # the official scripts' way: one generate call per agent per problem per round
        for p in problems:
            original_generate = counting

            def one_by_one(requests, _gen=original_generate):
                return [c for r in requests for c in _gen([r])]

            backend.generate = one_by_one
            debate_chunk(backend, task, [p], society, debate, prompts, seed=0)
            backend.generate = counting
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "peak_rss_mb": peak_mb}
    if batches:
        out.update(raw_forward(backend, batches))
    return out


def raw_forward(backend, batches) -> dict:
    """The recorded generate batches replayed as bare forward passes (see the module docstring)."""
    import torch

    vocab = backend.tokenizer.vocab_size
    raw_seconds = slots = useful = gen_seconds = 0
    torch.manual_seed(0)
    for (model, name), size, width, steps, tokens, seconds in batches:
        ids = torch.randint(10, vocab, (size, width), device=backend.device)
        mask = torch.ones_like(ids)
        single = name is not None and model is backend.peft
        with torch.inference_mode(), (backend._only(name) if single else contextlib.nullcontext()):
            start = time.perf_counter()
            out = model(input_ids=ids, attention_mask=mask, use_cache=True)
            for _ in range(steps - 1):
                step = out.logits[:, -1:].argmax(-1)
                mask = torch.cat([mask, torch.ones_like(step)], dim=1)
                out = model(input_ids=step, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True)
            out.logits[:, -1:].argmax(-1)
            raw_seconds += time.perf_counter() - start
        slots += size * steps
        useful += tokens
        gen_seconds += seconds
    return {"raw_tokens_per_s": slots / raw_seconds, "gen_tokens_per_s": useful / gen_seconds,
            "gen_slots_per_s": slots / gen_seconds, "batches": len(batches),
            "mean_batch": sum(b[1] for b in batches) / len(batches)}


def child(args, **flags) -> dict:
    cmd = [sys.executable, __file__, "--child", "--problems", str(flags.get("problems", args.problems)),
           "--agents", str(args.agents), "--model", args.model,
           *(["--model-path", args.model_path] if args.model_path else []), "--batch-size", str(args.batch_size),
           "--mode", flags["mode"], "--workdir", args.workdir] + (["--society"] if flags.get("society") else []) + \
        list(args.overrides)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=60)
    ap.add_argument("--loop-problems", type=int, default=10, help="problems for the (slow) one-call loop")
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--model", default="tiny", help="a conf/model preset")
    ap.add_argument("--model-path", default=None, help="a model folder instead of the preset's")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--mode", default="batched", choices=["batched", "loop"])
    ap.add_argument("--society", action="store_true")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for the debate (dataset.low=0 debate.max_new_tokens=128)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(args)))
        return
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="mafl-bench-")
    batched = child(args, mode="batched", society=True)
    loop = child(args, mode="loop", society=True, problems=args.loop_problems)
    single = child(args, mode="batched", society=False)
    print(f"model={args.model} agents={args.agents} rounds=2 (society of {2 * args.agents} LoRA adapters) "
          f"{' '.join(args.overrides)}")
    print(f"mafl batched debate : {batched['tokens_per_s']:8.0f} tokens/s  ({args.problems} problems, "
          f"{batched['tokens']} tokens in {batched['seconds']:.1f} s)")
    print(f"one call per agent  : {loop['tokens_per_s']:8.0f} tokens/s  ({args.loop_problems} problems, "
          f"{loop['tokens']} tokens in {loop['seconds']:.1f} s)")
    print(f"throughput ratio    : {batched['tokens_per_s'] / loop['tokens_per_s']:.1f}x  (goal >= 20x)")
    print(f"peak RSS, society   : {batched['peak_rss_mb']:.0f} MB")
    print(f"peak RSS, one model : {single['peak_rss_mb']:.0f} MB")
    print(f"memory ratio        : {batched['peak_rss_mb'] / single['peak_rss_mb']:.2f}x  (goal <= 1.3x)")
    print(f"raw forward         : {batched['raw_tokens_per_s']:8.0f} tokens/s  (the debate's {batched['batches']} "
          f"generate batches, mean {batched['mean_batch']:.0f} rows, replayed as bare KV-cached forward passes)")
    print(f"generation          : {batched['gen_tokens_per_s']:8.0f} tokens/s generated, "
          f"{batched['gen_slots_per_s']:.0f} positions/s counting rows that had stopped")
    print(f"generation / raw    : {batched['gen_tokens_per_s'] / batched['raw_tokens_per_s']:.0%} of the raw "
          f"throughput (goal >= 60%); {batched['gen_slots_per_s'] / batched['raw_tokens_per_s']:.0%} counting "
          f"every position")


if __name__ == "__main__":
    main()
