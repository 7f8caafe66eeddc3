"""Batched generation against one request at a time, on the same model and prompts: the check to run before trusting
any number of a new model (padding side, attention mask, pad token). Greedy, so that the two must agree token for
token up to float rounding of a batch's matrix shapes.

Prints the share of completions that are identical (token ids, and text), the first differing position of the others,
the tokens/s of each way and their ratio, and the peak memory of the process.

    python experiments/benchmarks/batched_vs_single.py --model smollm2 --dataset gsm8k --problems 8
    python experiments/benchmarks/batched_vs_single.py --model tiny --problems 32
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="a conf/model preset")
    ap.add_argument("--dataset", default="arithmetic")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides (e.g. dataset.data_dir=../shared/data)")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from helpers import compose_cfg

    from mafl.backends.base import GenerationRequest, Sampling
    from mafl.backends.hf import HFBackend
    from mafl.model_path import resolve_model_path
    from mafl.tasks import load_splits, task_from_config
    from mafl.tasks.prompts import Prompts

    cfg = compose_cfg([f"model={args.model}", f"dataset={args.dataset}", f"dataset.n_eval={args.problems}",
                       "dataset.n_train=1", "dataset.split=dev", *args.overrides])
    _, problems = load_splits(cfg.dataset)
    prompts = Prompts.from_cfg(cfg.dataset.prompts)
    backend = HFBackend(resolve_model_path(cfg.model), dtype=cfg.model.dtype, batch_size=args.batch_size,
                        chat_template=cfg.model.chat_template)
    greedy = Sampling(temperature=0.0, max_new_tokens=args.max_new_tokens)
    requests = [GenerationRequest(messages=prompts.first_round(p.question), sampling=greedy) for p in problems]
    tokens = {}
    start = time.perf_counter()
    batched = backend.generate(requests)
    tokens["batched"] = (sum(c.num_tokens for c in batched), time.perf_counter() - start)
    start = time.perf_counter()
    single = [backend.generate([r])[0] for r in requests]
    tokens["single"] = (sum(c.num_tokens for c in single), time.perf_counter() - start)
    same_text = sum(a.text == b.text for a, b in zip(batched, single))
    task = task_from_config(cfg.dataset)
    right = {way: sum(task.is_equivalent(task.extract_answer(c.text), p.answer) for c, p in zip(out, problems))
             for way, out in (("batched", batched), ("single", single))}
    ids = [(backend.tokenizer(a.text)["input_ids"], backend.tokenizer(b.text)["input_ids"])
           for a, b in zip(batched, single)]
    firsts = [next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
              for a, b in ids if a != b]
    rate = {k: n / s for k, (n, s) in tokens.items()}
    print(f"model={args.model} dataset={args.dataset} problems={len(problems)} greedy, {args.max_new_tokens} new tokens "
          f"at most, batch {args.batch_size}")
    print(f"identical completions : {same_text}/{len(problems)} ({same_text / len(problems):.0%})"
          + (f"; the others first differ at token {sorted(firsts)}" if firsts else ""))
    print(f"right (dev split)     : batched {right['batched']}/{len(problems)}, single {right['single']}/{len(problems)}")
    print(f"finished (eos)        : batched {sum(c.finished for c in batched)}, single {sum(c.finished for c in single)}")
    print(f"batched               : {rate['batched']:7.1f} tokens/s ({tokens['batched'][0]} tokens in "
          f"{tokens['batched'][1]:.1f} s)")
    print(f"one at a time         : {rate['single']:7.1f} tokens/s ({tokens['single'][0]} tokens in "
          f"{tokens['single'][1]:.1f} s)")
    print(f"ratio                 : {rate['batched'] / rate['single']:.1f}x")
    print(f"peak RSS              : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print("first answer          :", batched[0].text[:300].replace("\n", " "))


if __name__ == "__main__":
    main()
