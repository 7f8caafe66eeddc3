"""What GRPO costs per fine-tuning example relative to SFT, on the same prompts, measured in one run.

One model (a generator of the society), ``--prompts`` round-1 arithmetic prompts of the debate. SFT trains on each
prompt with a worked, right answer (the run's ``finetune.train`` settings); GRPO trains on the same prompts, sampling
``num_generations`` completions of each and scoring them (the run's ``finetune.grpo`` settings, reward ``majority``
with the right answer as the target: the cost does not depend on where the target comes from). Both start from the
same base model, loaded once and lent to each (as the local launcher does), one after the other in this process.

Prints, for each: the trainer's own seconds (``train_runtime``), the optimizer steps, the passes over the data
(epochs), the seconds per example and pass (a prompt and its group of completions for GRPO), and the ratios GRPO /
SFT per example and pass and per whole fine-tune. Settings can be changed like a run's
(``finetune.grpo.num_generations=8``, ...).

    OMP_NUM_THREADS=2 python experiments/benchmarks/grpo_cost.py [--prompts 32] [OVERRIDE ...]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def make_data(settings, n: int, seed: int = 0):
    """``n`` round-1 prompts of the arithmetic debate: the SFT set (each with its worked right answer) and the GRPO
    prompts (each with the right answer as its target)."""
    from mafl.finetune.rl_prompts import PromptSet, RLPrompt
    from mafl.finetune.sets import Example, FinetuneSet
    from mafl.tasks.arithmetic import QUESTION, arithmetic_value

    rng = random.Random(seed)
    examples, prompts = [], []
    for i in range(n):
        a, b, c, d, e, f = (rng.randint(0, 29) for _ in range(6))
        value = arithmetic_value(a, b, c, d, e, f)
        messages = settings.dataset.prompts.first_round(QUESTION.format(a, b, c, d, e, f))
        chain = (f"{b}*{c}={b * c}, {e}*{f}={e * f}, {a}+{d}={a + d}, {a + d}+{b * c}={a + d + b * c}, "
                 f"{a + d + b * c}-{e * f}={value}. The answer is {value}.")
        examples.append(Example(prompt=messages, response=chain, problem_id=str(i), correct=True))
        prompts.append(RLPrompt(prompt=messages, problem_id=str(i), target=str(value), target_correct=True))
    return FinetuneSet("generator_0", examples), PromptSet("generator_0", "majority", prompts)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=32, help="prompts (= SFT examples) of the model")
    parser.add_argument("--workdir", default=None, help="where the adapters go (a temporary folder by default)")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for a run")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import compose_cfg

    from mafl.finetune.finetune_one import SharedBase, finetune_model
    from mafl.model_path import resolve_model_path
    from mafl.pipeline import validate
    from mafl.tasks import task_options

    settings = validate(compose_cfg(["method=multiagent_grpo", *args.overrides]))
    ft, model = settings.finetune, settings.model
    base_path = resolve_model_path(model, progress=False)
    examples, prompts = make_data(settings, args.prompts)
    folder = Path(tempfile.mkdtemp(prefix="mafl-grpo-bench-", dir=args.workdir))
    base = SharedBase(base_path, model.dtype, model.chat_template)
    with base.lend():
        pass  # loaded once, before either is timed
    common = dict(mode=ft.mode, lora=ft.lora, seed=0, device=settings.device, dtype=model.dtype,
                  chat_template=model.chat_template, base=base)
    out = {"prompts": args.prompts, "model": base_path}
    for name, kwargs in (("sft", dict(objective="sft", train=ft.train)),
                         ("grpo", dict(objective="grpo", prompts=prompts, grpo=ft.grpo, reward="majority",
                                       task=task_options(settings.dataset.options)))):
        start = time.perf_counter()
        result = finetune_model(base_path, examples, folder / name, desc=f"benchmark: {name}", **kwargs, **common)
        wall = time.perf_counter() - start
        epochs = float((ft.train if name == "sft" else ft.grpo).get("num_train_epochs", 1))
        out[name] = {"train_runtime": result.train_runtime, "wall": wall, "steps": result.global_step,
                     "epochs": epochs, "seconds_per_example_pass": result.train_runtime / (args.prompts * epochs),
                     "grpo_metrics": result.grpo_metrics or None}
    out["ratio_per_example_pass"] = out["grpo"]["seconds_per_example_pass"] / out["sft"]["seconds_per_example_pass"]
    out["ratio_whole_finetune"] = out["grpo"]["train_runtime"] / out["sft"]["train_runtime"]
    out["settings"] = {"train": ft.train, "grpo": ft.grpo}
    print(f"{args.prompts} prompts, model {base_path}")
    print(f"{'':6} {'seconds':>8} {'steps':>6} {'epochs':>6} {'s/example/pass':>15}")
    for name in ("sft", "grpo"):
        r = out[name]
        print(f"{name:6} {r['train_runtime']:8.1f} {r['steps']:6d} {r['epochs']:6.0f} "
              f"{r['seconds_per_example_pass']:15.3f}")
    print(f"GRPO / SFT: {out['ratio_per_example_pass']:.1f}x per example and pass, "
          f"{out['ratio_whole_finetune']:.1f}x per fine-tune at the default settings")
    print(json.dumps(out, default=str))
    return out


if __name__ == "__main__":
    main()
