"""Grading throughput (answers/s) on GSM8K and MATH predictions, and the worst time of one hostile check.

Predictions are made from the offline data (no model needed): each reference solution read as a response
(a correct answer), another problem's answer (a wrong one), and for MATH also ``x = <answer>`` (correct, but
only math-verify can tell). Each prediction is extracted from its response and graded against the gold answer.

    MAFL_DATA_DIR=../shared/data python experiments/benchmarks/grading.py [--problems 500]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from pathlib import Path

from mafl.tasks import get_task
from mafl.tasks.answers import last_boxed

HOSTILE_LATEX = {
    "power tower 9^9^9^9": r"9^{9^{9^{9}}}",
    "factorial of 10^10^10": r"10^{10^{10}}!",
    "100-term polynomial": "+".join(f"x^{{{i}}}" for i in range(100)),
    "60 nested fractions": r"\frac{" * 60 + "1" + "}{2}" * 60,
    "400 nested parentheses": "(" * 400 + "1" + ")" * 400,
    "10k-char nesting": "(" * 5000 + "1" + ")" * 5000,
    "120 nested roots": r"\sqrt{" * 120 + "2" + "}" * 120,
}
HOSTILE_TEXT = {
    "thousands chain": "111," * 20000 + "1111",
    "open boxes": "\\boxed{" * 50000,
    "answer phrases": "the answer is " * 20000,
    "200k digits": "9" * 200000,
}


def rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def rate(label: str, n: int, seconds: float) -> None:
    print(f"  {label:58s} {n:6d} answers in {seconds:6.2f} s = {n / seconds:9.0f} answers/s")


def bench_gsm8k(data: Path, n: int) -> None:
    task = get_task("gsm8k")
    sample = rows(data / "gsm8k" / "test.jsonl")[:n]
    golds = [task.gold_answer(r) for r in sample]
    responses = [r["answer"] for r in sample] + [f"So the answer is {g}0." for g in golds]
    gold_of = golds + golds
    start = time.perf_counter()
    preds = [task.extract_answer(r) for r in responses]
    verdicts = [task.is_equivalent(p, g) for p, g in zip(preds, gold_of)]
    rate("GSM8K extract + grade (half right, half wrong)", len(responses), time.perf_counter() - start)
    assert sum(verdicts) == len(sample)


def bench_math(data: Path, n: int) -> None:
    task = get_task("math")
    sample = rows(data / "math" / "math500_test.jsonl")[:n]
    golds = [task.gold_answer(r) for r in sample]
    wrong = golds[1:] + golds[:1]
    task.is_equivalent("1", "2")  # start a worker outside the timings
    sets = {
        "own solution (same text: fast path)": [(r["solution"], g) for r, g in zip(sample, golds)],
        "another problem's answer (wrong)": [(rf"\boxed{{{w}}}", g) for w, g in zip(wrong, golds)],
        "x = answer (right; math-verify only)": [(rf"\boxed{{x = {g}}}", g) for g in golds],
    }
    for label, items in sets.items():
        start = time.perf_counter()
        for resp, gold in items:
            task.is_equivalent(task.extract_answer(resp), gold)
        rate(f"MATH500 {label}, one at a time", len(items), time.perf_counter() - start)
        start = time.perf_counter()
        task.equivalent_many([(task.extract_answer(resp), gold) for resp, gold in items])
        rate(f"MATH500 {label}, equivalent_many", len(items), time.perf_counter() - start)
    print(f"  sandbox: {task.sandbox.stats}")


def bench_hostile() -> None:
    math_task, gsm8k = get_task("math"), get_task("gsm8k")
    math_task.is_equivalent("1", "2")
    worst = (0.0, "")
    for name, latex in HOSTILE_LATEX.items():
        start = time.perf_counter()
        ok = math_task.is_equivalent(latex, "5")
        seconds = time.perf_counter() - start
        print(f"  MATH check {name:28s} -> {ok!s:5} in {seconds:5.2f} s")
        worst = max(worst, (seconds, name))
    result = {}

    def in_thread():
        start = time.perf_counter()
        result["ok"] = math_task.is_equivalent(HOSTILE_LATEX["power tower 9^9^9^9"], "5")
        result["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    print(f"  MATH check power tower from a worker thread -> {result['ok']!s:5} in {result['seconds']:5.2f} s")
    worst = max(worst, (result["seconds"], "power tower (thread)"))
    for name, text in HOSTILE_TEXT.items():
        start = time.perf_counter()
        gsm8k.extract_answer(text), math_task.extract_answer(text), last_boxed(text)
        seconds = time.perf_counter() - start
        print(f"  extraction of {name:25s} ({len(text)} chars) in {seconds:5.3f} s")
    print(f"  worst single check: {worst[0]:.2f} s ({worst[1]}); limit: check_timeout={math_task.check_timeout} s")
    print(f"  sandbox: {math_task.sandbox.stats}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = os.environ.get("MAFL_DATA_DIR") or str(Path(__file__).resolve().parents[3] / "shared" / "data")
    parser.add_argument("--data-dir", default=default_data)
    parser.add_argument("--problems", type=int, default=500)
    args = parser.parse_args()
    random.seed(0)
    data = Path(args.data_dir)
    print(f"grading benchmark ({os.cpu_count()} CPUs), data {data}")
    print("GSM8K:")
    bench_gsm8k(data, args.problems)
    print("MATH:")
    bench_math(data, args.problems)
    print("hostile inputs:")
    bench_hostile()


if __name__ == "__main__":
    main()
