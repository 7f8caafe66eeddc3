"""``mafl report <run or sweep folder>... [--plot DIR] [--split eval] [--metric accuracy/debate]``.

Reads every ``results.json`` under the given folders and prints Markdown:

1. a table shaped like the paper's Table 1: rows = model and method, columns = dataset, cells = the metric at
   each run's final iteration ± its standard error (over problems). Several runs of the same method, dataset
   and model (seeds) are averaged: mean ± standard error across runs; every cell says how many seeds it
   averages (``n=k``), and every row how many answers its method generated per problem;
2. the iteration curve per dataset: rows = model and method, columns = iteration 0..L;
3. the diversity metrics per dataset and iteration, when the runs measured them;
4. the answers generated per problem and the shares of answers and summaries cut off by their token budgets.

``--plot DIR`` also writes PNG plots of the metric and of each diversity metric against the iteration.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from mafl.metrics.results import Results, load_results

METHOD_ORDER = ["single", "majority", "debate", "star", "majority_ft", "multiagent_ft"]
DIVERSITY_METRICS = [
    "consensus", "consensus/round1", "kl/agents", "kl/base", "nll", "embedding_dissimilarity",
    "kl/agents_final", "kl/base_final", "nll_final", "embedding_dissimilarity_final",
]
# what the answers cost and what their token budgets cut off (mafl.metrics.cutoff)
BUDGET_METRICS = ["answers_per_problem", "cutoff/round1", "cutoff/round2", "cutoff/round3", "cutoff/summary"]
PERCENT_PREFIXES = ("accuracy", "consensus", "cutoff")

Group = tuple[str, str, str]  # (model, method, dataset)


@dataclass(frozen=True)
class Cell:
    value: float
    stderr: float | None
    runs: int  # > 1: mean ± SE across runs; 1: the run's own stderr


def group_runs(results: Sequence[Results]) -> dict[Group, list[Results]]:
    """Runs by (model, method, dataset), in the paper's method order."""
    groups: dict[Group, list[Results]] = defaultdict(list)
    for r in results:
        groups[(r.model, r.method, r.dataset)].append(r)
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], rank.get(kv[0][1], len(rank)), kv[0][1], kv[0][2])))


def combine(values: Sequence[tuple[float, float | None]]) -> Cell:
    """One run: its value and stderr. Several: the mean across runs and its stderr (sd/sqrt(k), ddof=1)."""
    if len(values) == 1:
        return Cell(values[0][0], values[0][1], 1)
    xs = [v for v, _ in values]
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    return Cell(mean, sd / math.sqrt(len(xs)), len(xs))


def final_cell(runs: Sequence[Results], metric: str, split: str) -> Cell | None:
    """The metric at each run's last measured iteration, combined across runs."""
    finals = [recs[-1] for recs in (r.select(metric, split) for r in runs) if recs]
    return combine([(x.value, x.stderr) for x in finals]) if finals else None


def curve(runs: Sequence[Results], metric: str, split: str) -> dict[int, Cell]:
    """The metric per iteration, combined across the runs that measured that iteration."""
    by_iteration: dict[int, list[tuple[float, float | None]]] = defaultdict(list)
    for r in runs:
        for rec in r.select(metric, split):
            by_iteration[rec.iteration].append((rec.value, rec.stderr))
    return {k: combine(v) for k, v in sorted(by_iteration.items())}


def format_cell(cell: Cell | None, metric: str) -> str:
    if cell is None:
        return "–"
    scale, digits = (100.0, 1) if metric.startswith(PERCENT_PREFIXES) else (1.0, 3)
    text = f"{cell.value * scale:.{digits}f}"
    if cell.stderr is not None:
        text += f" ± {cell.stderr * scale:.{digits}f}"
    return text + f" (n={cell.runs})"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def answers_per_problem(runs: Sequence[Results], split: str) -> str:
    """The answers generated per problem at the runs' final iteration ("–" for runs that did not record it)."""
    values = sorted({round(recs[-1].value, 1) for recs in (r.select("answers_per_problem", split) for r in runs)
                     if recs})
    return "/".join(f"{v:g}" for v in values) if values else "–"


def unit(metric: str) -> str:
    return "%" if metric.startswith(PERCENT_PREFIXES) else "per token" if metric.startswith(("kl", "nll")) else ""


def build_report(results: Sequence[Results], *, split: str = "eval", metric: str = "accuracy/debate") -> str:
    groups = group_runs(results)
    datasets = sorted({g[2] for g in groups})
    rows_of = list(dict.fromkeys((g[0], g[1]) for g in groups))
    u = f" ({unit(metric)})" if unit(metric) else ""
    out = [f"## {metric}{u} on {split} at the final iteration", ""]
    out.append(markdown_table(
        ["model", "method", "answers/problem", *datasets],
        [[model, method, answers_per_problem([r for d in datasets for r in groups.get((model, method, d), [])], split),
          *(format_cell(final_cell(groups[(model, method, d)], metric, split), metric)
            if (model, method, d) in groups else "–" for d in datasets)]
         for model, method in rows_of],
    ))
    out += ["", f"± is the standard error over problems (sd/sqrt(n), ddof=1) of one run (n=1); (n=k): the mean ± "
                f"standard error across k runs (seeds) of the same model, method and dataset. answers/problem: "
                f"the answers each method generated per problem. {len(results)} run(s)."]

    for d in datasets:
        curves = {(m, meth): curve(runs, metric, split) for (m, meth, ds), runs in groups.items() if ds == d}
        iterations = sorted({k for c in curves.values() for k in c})
        if not iterations:
            continue
        out += ["", f"## {metric}{u} on {split} by iteration: {d}", ""]
        out.append(markdown_table(
            ["model", "method", *(f"iter {k}" for k in iterations)],
            [[m, meth, *(format_cell(c.get(k), metric) for k in iterations)] for (m, meth), c in curves.items()],
        ))

    for title, metrics in (("diversity", DIVERSITY_METRICS), ("answers and cut-offs", BUDGET_METRICS)):
        for d in datasets:
            present = [x for x in metrics
                       if any(r.select(x, split) for (_, _, ds), runs in groups.items() if ds == d for r in runs)]
            if not present:
                continue
            rows = []
            for (m, meth, ds), runs in groups.items():
                if ds != d:
                    continue
                curves = {x: curve(runs, x, split) for x in present}
                for k in sorted({k for c in curves.values() for k in c}):
                    rows.append([m, meth, str(k), *(format_cell(curves[x].get(k), x) for x in present)])
            out += ["", f"## {title} on {split} by iteration: {d}", ""]
            out.append(markdown_table(["model", "method", "iteration",
                                       *(f"{x}{' (%)' if unit(x) == '%' else ''}" for x in present)], rows))
    return "\n".join(out) + "\n"


def report_main(argv: Sequence[str] | None = None) -> str:
    """The ``mafl report`` command: prints the report and returns its text."""
    parser = argparse.ArgumentParser(prog="mafl report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run folders, sweep folders or results.json files")
    parser.add_argument("--plot", metavar="DIR", default=None, help="also write PNG plots to DIR")
    parser.add_argument("--split", default="eval", help="eval (default) or train")
    parser.add_argument("--metric", default="accuracy/debate", help="the metric of the tables (default: %(default)s)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        results = load_results(args.paths)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"mafl report: {e}") from e
    text = build_report(results, split=args.split, metric=args.metric)
    if args.plot:
        from mafl.plots import write_plots

        written = write_plots(results, args.plot, split=args.split, metrics=[args.metric, *DIVERSITY_METRICS])
        text += "\n" + "\n".join(f"plot: {p}" for p in written) + "\n"
    sys.stdout.write(text)
    return text


if __name__ == "__main__":
    report_main()
