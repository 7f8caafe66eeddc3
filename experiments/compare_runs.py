"""How far two runs of one config drift apart: the same default run on two CPU kernel levels, two thread counts, two
torch builds. It compares every record of their ``results.json`` and, iteration by iteration, how many of their
responses are the same text, and where the first one differs.

    python experiments/compare_runs.py RUN_A RUN_B

Two runs of the same config on the same weights, e.g. (docs/tiny_model.md, "Same weights, other kernels"):

    mafl run_dir=runs/kernels_default
    ATEN_CPU_CAPABILITY=avx2 mafl run_dir=runs/kernels_avx2
    python experiments/compare_runs.py runs/kernels_default runs/kernels_avx2

With ``--require-equal`` it fails (exit 1, one line saying the first difference) unless the runs hold the same
records, equal within ``--tolerance``, and the same responses: a run killed and resumed against the same run left
whole (experiments/vllm_check.sh).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def records(run: Path) -> tuple[dict, dict]:
    """Its records by (iteration, split, metric, agent, other agent), and the whole results.json."""
    results = json.loads((run / "results.json").read_text())
    return {(r["iteration"], r["split"], r["metric"], r["agent"], r.get("other")): r["value"]
            for r in results["records"]}, results


def responses(path: Path) -> list[tuple[str, int, int, str]]:
    """Every response of a transcripts file: (problem id, round, agent, text)."""
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        for turns in row["rounds"]:
            out += [(row["problem"]["id"], t["round"], t["agent"], t["response"]) for t in turns]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--metrics", default="accuracy/debate,accuracy/agent_round1,accuracy/round1_majority,flips/round1-2/wrong_right,"
                        "flips/round1-2/right_wrong,consensus",
                        help="comma-separated metric names to print per iteration (all are compared)")
    parser.add_argument("--require-equal", action="store_true",
                        help="exit 1 unless every record (within --tolerance) and every response is the same")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="with --require-equal: |a - b| allowed")
    args = parser.parse_args(argv)
    (ra, full_a), (rb, full_b) = records(args.a), records(args.b)
    if full_a["model_weights"] != full_b["model_weights"]:
        print("the runs started from different weights: this compares models, not kernels", file=sys.stderr)
    common = sorted(set(ra) & set(rb), key=str)
    diffs = {k: rb[k] - ra[k] for k in common if isinstance(ra[k], (int, float)) and isinstance(rb[k], (int, float))}
    same = sum(1 for k in diffs if diffs[k] == 0)
    print(f"records: {len(common)} in both, {same} of {len(diffs)} numeric ones equal")
    iterations = sorted({k[0] for k in common})
    wanted = args.metrics.split(",")
    print(f"| metric (%, eval) | {' | '.join(f'iteration {i}: A / B' for i in iterations)} |")
    print(f"|---|{'---|' * len(iterations)}")
    for metric in wanted:
        cells = []
        for i in iterations:
            key = (i, "eval", metric, None, None)
            cells.append(f"{100 * ra[key]:.1f} / {100 * rb[key]:.1f}" if key in ra and key in rb else "–")
        print(f"| {metric} | {' | '.join(cells)} |")
    biggest = sorted(((abs(v), k) for k, v in diffs.items() if k[1] == "eval" and k[3] is None and k[4] is None and v), reverse=True)[:5]
    problems: list[str] = []
    print("largest differences (eval, society-wide):", "; ".join(f"iter {k[0]} {k[2]}: {diffs[k]:+.4f}"
                                                            for _, k in biggest) or "none")
    for folder in sorted(p.relative_to(args.a) for p in args.a.glob("iter_*/*/transcripts.jsonl")):
        other = args.b / folder
        if not other.exists():
            problems.append(f"{folder} is in A only")
            continue
        xa, xb = responses(args.a / folder), responses(other)
        equal = sum(1 for x, y in zip(xa, xb) if x == y)
        first = next(((x, y) for x, y in zip(xa, xb) if x != y), None)
        where = f"; the first that differs: {first[0][0]} round {first[0][1] + 1} agent {first[0][2]}" if first else ""
        print(f"{folder.parent}: {equal} of {len(xa)} responses the same text{where}")
        if args.require_equal and (first or len(xa) != len(xb)):
            problems.append(f"{folder.parent}: {len(xa) - equal} of {len(xa)} responses differ ({len(xb)} in B){where}")
    if args.require_equal:
        only = sorted(set(ra) ^ set(rb), key=str)
        if only:
            problems.insert(0, f"records in one run only: {only[:3]}")
        far = [k for k in common if ra[k] != rb[k] and not (k in diffs and abs(diffs[k]) <= args.tolerance)]
        if far:
            problems.insert(0, f"{len(far)} records differ by more than {args.tolerance}: the first {far[0]} "
                               f"{ra[far[0]]} / {rb[far[0]]}")
        if problems:
            print(f"compare_runs: the runs differ: {problems[0]}", file=sys.stderr)
            return 1
        print(f"compare_runs: the runs are the same ({len(common)} records, within {args.tolerance})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
