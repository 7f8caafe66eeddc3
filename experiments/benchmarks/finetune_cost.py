"""What one of the society's fine-tunes costs on a model preset: one LoRA fine-tune (the preset's recipe, one epoch)
on ``--examples`` examples shaped like the debate's (the task's round-1 prompt, a worked answer), in this process.

Prints seconds in all and per example, training tokens/s, and the process's peak memory against its memory after
loading the model (what training adds: activations, the logits of the vocabulary, optimizer state).

    python experiments/benchmarks/finetune_cost.py --model smollm2 --examples 32
    python experiments/benchmarks/finetune_cost.py --model tiny --examples 64
"""
from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="a conf/model preset")
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides (e.g. finetune.train.per_device_train_batch_size=4)")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from helpers import compose_cfg

    from mafl.finetune.finetune_one import SharedBase, finetune_model
    from mafl.finetune.sets import Example, FinetuneSet
    from mafl.model_path import resolve_model_path
    from mafl.pipeline import validate
    from mafl.tasks.prompts import Prompts

    cfg = compose_cfg([f"model={args.model}", "finetune.train.num_train_epochs=1", *args.overrides])
    settings = validate(cfg)
    prompts = Prompts.from_cfg(cfg.dataset.prompts)
    base_path = resolve_model_path(settings.model, progress=False)
    rng = random.Random(0)
    items = []
    for i in range(args.examples):
        a, b, c, d, e, f = (rng.randint(0, 29) for _ in range(6))
        question = f"What is the result of {a}+{b}*{c}+{d}-{e}*{f}?"
        answer = (f"First, {b}*{c} = {b * c} and {e}*{f} = {e * f}. Then {a} + {b * c} = {a + b * c}, "
                  f"{a + b * c} + {d} = {a + b * c + d}, and {a + b * c + d} - {e * f} = {a + b * c + d - e * f}. "
                  f"The answer is {a + b * c + d - e * f}.")
        items.append(Example(prompt=prompts.first_round(question), response=answer, problem_id=str(i), correct=True))
    examples = FinetuneSet("generator_0", items)
    ft = settings.finetune
    shared = SharedBase(base_path, settings.model.dtype, settings.model.chat_template)
    with shared.lend():
        pass
    loaded = rss_mb()
    with tempfile.TemporaryDirectory(prefix="mafl-ft-cost-") as work:
        start = time.perf_counter()
        result = finetune_model(base_path, examples, Path(work) / "generator_0", mode=ft.mode, lora=ft.lora,
                                train=ft.train, dtype=settings.model.dtype, chat_template=settings.model.chat_template,
                                base=shared)
        seconds = time.perf_counter() - start
    from mafl.backends.chat import prompt_ids, response_ids
    from mafl.models import load_tokenizer

    tok = load_tokenizer(base_path, chat_template=settings.model.chat_template)
    tokens = sum(len(prompt_ids(tok, x.prompt)) + len(response_ids(tok, x.response)) for x in items)
    print(f"model={args.model}: one LoRA fine-tune, {args.examples} examples, 1 epoch, r={ft.lora.get('r')}, "
          f"batch {ft.train.get('per_device_train_batch_size')}, lr {ft.train.get('learning_rate')}")
    print(f"seconds             : {seconds:.1f} in all, {seconds / args.examples:.2f} per example "
          f"(trainer: {result.train_runtime:.1f} s, {result.global_step} steps, loss {result.losses[0]:.3f} -> "
          f"{result.losses[-1]:.3f})")
    print(f"training tokens/s   : {tokens / seconds:.0f} ({tokens} tokens)")
    print(f"peak RSS            : {rss_mb():.0f} MB ({loaded:.0f} MB with the model loaded)")


if __name__ == "__main__":
    main()
