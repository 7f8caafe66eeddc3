"""``mafl report <run or sweep folder>... [--plot DIR] [--split eval] [--metric accuracy/debate]``.

Reads every ``results.json`` under the given folders and prints Markdown:

1. a table shaped like the paper's Table 1: rows = model and method, columns = dataset, cells = the metric at
   each run's final iteration ± its standard error (over problems). Several runs of the same method, dataset
   and model (seeds) are averaged: mean ± standard error across runs, marked ``(n=k)``;
   and, for the runs of several seeds, each seed's value ± its standard error over problems;
2. the iteration curve per dataset: rows = model and method, columns = iteration 0..L;
3. the diversity metrics per dataset and iteration, when the runs measured them;
4. the debate dynamics: per round transition, the share of agents right->right, wrong->right, right->wrong and
   wrong->wrong, where their new answers come from (kept, adopted, new), how often they take up the others'
   majority, and the consensus of every round; then the same per agent (each agent's flip matrix);
5. the failure measures (the pool's oracle, right answers voted out, conformity and persuasion, answer entropy);
   the answers and tokens generated per problem and the shares of answers and summaries cut off by their token
   budgets; the cost of each row (tokens per problem, wall time, dollars for an API run);
6. for a run of a mixed society (``society.models``), each agent (named with its base) by iteration: its accuracy,
   KL against its own base and NLL, and the matrix of KL between agents;
7. for runs fine-tuned by GRPO, per iteration: the reward (marked when it reads the gold answer), the prompts per
   model, the share of prompts whose group of completions had any reward variance, the mean reward;
8. where the time went: the wall time of every stage of every iteration (train debate, sets, fine-tunes, eval
   debate, metrics), summed over the runs, and each stage's share of the whole.
9. per run, the metrics it could not measure (and why) and, for a run that talked to an API, its usage
   (requests, tokens and cost, from ``usage.json``).

``--plot DIR`` also writes PNG plots of the metric and of each diversity metric against the iteration, the
paper's two figures (accuracy, and diversity, against the iteration), the table as a PNG and the metric against
the tokens generated per problem (every method, error bars included).

``--compare A B`` (repeatable) adds the paired difference of two methods or two iterations of one on the same
problems, pooled over seeds, with a 95% paired-bootstrap interval (mafl/reporting/paired.py); a side is
``METHOD[:ITERATION]``, e.g. ``--compare debate:0 single:0``, ``--compare multiagent_ft:3 multiagent_ft:0``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from mafl.reporting.aggregate import (
    BUDGET_METRICS, DIVERSITY_METRICS, DYNAMICS_METRICS, AGENT_DYNAMICS, FAILURE_METRICS, TOKENS, answers_per_problem,
    curve, final_cell, final_cells, format_cell, group_runs, markdown_table, unit,
)
from mafl.metrics.results import Results, load_results
from mafl.summary import run_notes


def mixed_weights_warnings(results: Sequence[Results]) -> list[str]:
    """One warning per model name whose runs started from more than one base weights (another tiny recipe or
    folder under the same name, or the tiny model built on another kind of CPU): its rows, and the seeds averaged
    in them, mix models. A model some of whose runs record no weights (runs older than the record) gets a note."""
    from mafl.model_weights import short_weights

    by_model: dict[str, dict[str | None, list[str]]] = {}
    for r in results:
        by_model.setdefault(r.model, {}).setdefault(r.model_weights, []).append(f"{r.method} seed {r.seed}")
    out = []
    for model, weights in by_model.items():
        known = {h: names for h, names in weights.items() if h}
        if len(known) > 1:
            runs = "; ".join(f"{short_weights(h)}: {', '.join(sorted(names))}" for h, names in sorted(known.items()))
            out += ["", f"**Warning: the runs of model {model} started from {len(known)} different base weights** "
                        f"(another recipe, model folder or kind of CPU), so rows and seed means mix models ({runs})."]
        if known and None in weights:
            out += ["", f"Note: {len(weights[None])} run(s) of model {model} record no base weights (older than "
                        f"the record), so whether they started from the same model cannot be checked."]
    return out


def build_report(results: Sequence[Results], *, split: str = "eval", metric: str = "accuracy/debate",
                 compare: Sequence[tuple[str, str]] | None = None) -> str:
    """The report's Markdown; ``compare``: pairs (A, B) of sides (``METHOD[:ITERATION]``) whose paired difference
    is shown (a ValueError when a side has no run or the runs did not answer the same problems)."""
    groups = group_runs(results)
    datasets = sorted({g[2] for g in groups})
    rows_of = list(dict.fromkeys((g[0], g[1]) for g in groups))
    u = f" ({unit(metric)})" if unit(metric) else ""
    out = [f"## {metric}{u} on {split} at the final iteration", ""]
    out.append(markdown_table(
        ["model", "method", "answers/problem", "tokens/problem", *datasets],
        [[model, method, answers_per_problem(row_runs := [r for d in datasets for r in groups.get((model, method, d),
                                                                                                   [])], split),
          tokens_per_problem(row_runs, split), *final_cells(groups, model, method, datasets, metric, split, seeds=True)]
         for model, method in rows_of],
    ))
    out += ["", f"± is the standard error over problems (sd/sqrt(n), ddof=1) of one run (n=1); (n=k): the mean ± "
                f"standard error across k runs (seeds) of the same model, method and dataset. answers/problem: "
                f"the answers each method generated per problem; tokens/problem: the tokens it generated per "
                f"problem (answers and summaries, mean over runs; see the cost table). {len(results)} run(s)."]
    out += mixed_weights_warnings(results)
    cost = cost_table(groups, metric, split)
    if cost:
        out += ["", f"## cost of each row on {split} at the final iteration", "", cost]
    for a, b in compare or ():
        from mafl.reporting.paired import Side, compare as paired, comparison_table

        diffs = paired(results, Side.parse(a), Side.parse(b), split=split)
        out += ["", f"## paired difference on {split}: {a} − {b} (accuracy/debate, same problems, pooled over "
                    "seeds)", "", comparison_table(diffs), "",
                "The difference of the two sides' final answers problem by problem, averaged over the seeds both "
                "ran; the 95% interval is a paired bootstrap over problems (each keeps its difference on every "
                "seed; mafl/reporting/paired.py). It is narrower than the two cells' standard errors suggest, since "
                "both sides answered the same problems."]

    multi = [(g, runs) for g, runs in groups.items() if len(runs) > 1]
    if multi:
        out += ["", f"## {metric}{u} on {split} at the final iteration, per seed", ""]
        out.append(markdown_table(
            ["model", "method", "dataset", "seed", "value ± stderr over problems"],
            [[m, meth, d, str(r.seed), format_cell(final_cell([r], metric, split), metric)]
             for (m, meth, d), runs in multi for r in sorted(runs, key=lambda r: str(r.seed))]))

    for d in datasets:
        curves = {(m, meth): curve(runs, metric, split) for (m, meth, ds), runs in groups.items() if ds == d}
        iterations = sorted({k for c in curves.values() for k in c})
        if not iterations:
            continue
        out += ["", f"## {metric}{u} on {split} by iteration: {d}", ""]
        out.append(markdown_table(
            ["model", "method", *(f"iter {k}" for k in iterations)],
            [[m, meth, *(format_cell(c.get(k), metric, seeds=True) for k in iterations)]
             for (m, meth), c in curves.items()],
        ))

    for title, metrics in (("diversity", DIVERSITY_METRICS), ("debate dynamics (share of agents)", DYNAMICS_METRICS),
                           ("failure measures", FAILURE_METRICS), ("answers, tokens and cut-offs", BUDGET_METRICS)):
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
                    rows.append([m, meth, str(k), *(format_cell(curves[x].get(k), x, seeds=True) for x in present)])
            out += ["", f"## {title} on {split} by iteration: {d}", ""]
            out.append(markdown_table(["model", "method", "iteration",
                                       *(f"{x}{' (%)' if unit(x) == '%' else ''}" for x in present)], rows))
    for d in datasets:
        table = agent_dynamics_table({g: runs for g, runs in groups.items() if g[2] == d}, split)
        if table:
            out += ["", f"## debate dynamics per agent on {split} by iteration: {d}", "", table]
    agents = agents_section(results, split)
    if agents:
        out += ["", agents]
    rl = rl_table(groups)
    if rl:
        out += ["", "## reinforcement learning (GRPO) by iteration", "", rl]
    timing = timing_table(results)
    if timing:
        out += ["", "## where the time went (wall seconds)", "", timing]
    notes = [(r, run_notes(r)) for r in results]
    if any(lines for _, lines in notes):
        out += ["", "## notes by run", ""]
        for r, lines in notes:
            where = r.path.parent if r.path is not None else f"{r.model} {r.method} {r.dataset}"
            out += [f"- {where}: {line}" for line in lines]
    return "\n".join(out) + "\n"


def tokens_per_problem(runs: Sequence[Results], split: str) -> str:
    """The tokens generated per problem at the runs' final iteration, mean over the runs (``–``: not recorded)."""
    cell = final_cell(runs, TOKENS, split)
    return f"{cell.value:.0f}" if cell is not None else "–"


def eval_seconds(r: Results) -> float | None:
    """The wall time of a run's eval debate at its last measured iteration."""
    timings = r.timings or {}
    last = max((int(k) for k, t in timings.items() if "eval_debate" in t), default=None)
    return float(timings[str(last)]["eval_debate"]) if last is not None else None


def run_seconds(r: Results) -> float | None:
    """The wall time of a whole run: every stage of every iteration (each model's fine-tune is inside finetune)."""
    seconds = [float(v) for t in (r.timings or {}).values() for k, v in t.items() if "/" not in k]
    return sum(seconds) if seconds else None


def run_dollars(r: Results) -> float | None:
    """What a run that talked to an API cost (``usage.json``; None without one, or without prices)."""
    import json

    from mafl.backends.usage import USAGE_FILE

    usage = r.path.parent / USAGE_FILE if r.path is not None else None
    if usage is None or not usage.exists():
        return None
    return (json.loads(usage.read_text()).get("total") or {}).get("cost")


def cost_table(groups, metric: str, split: str) -> str:
    """Rows: model, method, dataset; columns: the metric, the tokens generated per problem (answers, summaries),
    the eval debate's and the whole run's wall time and, for API runs with prices, dollars (means over runs)."""
    def mean(values) -> float | None:
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    rows, dollars = [], False
    for (m, meth, d), runs in groups.items():
        cells = {x: final_cell(runs, x, split) for x in ("tokens/answers", "tokens/summaries", TOKENS)}
        if cells[TOKENS] is None:
            continue
        cost = mean(run_dollars(r) for r in runs)
        dollars |= cost is not None
        eval_s, run_s = mean(eval_seconds(r) for r in runs), mean(run_seconds(r) for r in runs)
        rows.append([m, meth, d, format_cell(final_cell(runs, metric, split), metric, seeds=True),
                     *(format_cell(cells[x], x) for x in ("tokens/answers", "tokens/summaries", TOKENS)),
                     f"{eval_s:.1f}" if eval_s is not None else "–", f"{run_s:.1f}" if run_s is not None else "–",
                     f"{cost:.4f}" if cost is not None else "–"])
    if not rows:
        return ""
    header = ["model", "method", "dataset", metric, "tokens/answers", "tokens/summaries", "tokens/total",
              "eval debate (s)", "whole run (s)", "US$ per run"]
    if not dollars:
        header, rows = header[:-1], [row[:-1] for row in rows]
    note = ("Tokens: generated per eval problem at the final iteration (answers, the summaries the agents read, "
            "and both), mean over runs ± its standard error. Wall seconds: the final iteration's eval debate and the "
            "whole run (fine-tuning, train debates and a token-matched majority's reference debate included), mean "
            "over runs." + (" US$: the run's API cost (usage.json, backend.prices)." if dollars else ""))
    return markdown_table(header, rows) + "\n\n" + note


def agent_dynamics_table(groups, split: str) -> str:
    """Rows: model, method, iteration, round transition and agent; columns: the agent's flip matrix (share of
    its problems in each cell), its moves and its adoption of the others' majority (%). "" when no run has them."""
    from mafl.metrics.dynamics import ADOPT

    rows = []
    for (m, meth, _), runs in groups.items():
        found = {(rec.metric.split("/")[1], rec.agent) for r in runs for rec in r.records
                 if rec.split == split and rec.agent is not None and rec.other is None
                 and rec.metric.startswith(("flips/", f"{ADOPT}/"))}
        for transition, agent in sorted(found):
            curves = {name: curve(runs, f"{prefix}/{transition}{suffix}", split, agent)
                      for name, prefix, suffix in AGENT_DYNAMICS}
            for k in sorted({k for c in curves.values() for k in c}):
                rows.append([m, meth, str(k), transition.removeprefix("round"), str(agent),
                             *(format_cell(curves[name].get(k), "flips", seeds=True) for name, _, _ in AGENT_DYNAMICS)])
    if not rows:
        return ""
    return markdown_table(["model", "method", "iteration", "rounds", "agent",
                           *(f"{name} (%)" for name, _, _ in AGENT_DYNAMICS)], rows)


AGENT_METRICS = ("accuracy/agent_round1", "accuracy/agent_final", "kl/base", "nll")


def agents_section(results: Sequence[Results], split: str) -> str:
    """For each run of a mixed society (``society.models``): each agent's accuracy, KL against its own base and
    NLL by iteration, and the KL between agents (``kl/agents[i, j]``) at each iteration, every agent named with
    its base; "" when no run is of a mixed society."""
    from mafl.debate.society_models import agent_bases

    out = []
    for r in results:
        bases = agent_bases(r.config)
        if not bases:
            continue
        name = [f"{n} ({b})" for n, b in enumerate(bases)]
        iterations = sorted({x.iteration for x in r.records if x.split == split})
        one = lambda metric, k, n: next((x for x in r.select(metric, split, n) if x.iteration == k), None)  # noqa: E731
        rows = [[str(k), name[n], *(format_cell(one(m, k, n), m) for m in AGENT_METRICS)]
                for k in iterations for n in range(len(bases))]
        out += [f"## each agent of {r.model} ({r.method}, {r.dataset}, seed {r.seed}) on {split}", "",
                markdown_table(["iteration", "agent (base)", *(f"{m}{' (%)' if unit(m) == '%' else ''}"
                                                               for m in AGENT_METRICS)], rows), ""]
        pairs = {(x.iteration, x.agent, x.other): x for x in r.records
                 if x.metric == "kl/agents" and x.split == split and x.other is not None}
        for k in sorted({k for k, _, _ in pairs}):
            out += [f"kl/agents (per token) at iteration {k}: row i, column j = KL(agent i || agent j) on agent i's "
                    "round-1 answers", ""]
            out.append(markdown_table(["agent (base)", *name], [
                [name[i], *("" if i == j else format_cell(pairs.get((k, i, j)), "kl/agents")
                            for j in range(len(bases)))] for i in range(len(bases))]))
            out.append("")
    return "\n".join(out).rstrip()


def rl_table(groups) -> str:
    """Rows: model, method, dataset and iteration of the runs that fine-tuned by GRPO; columns: the reward (one that
    reads the gold answer says so), the prompts per model, the share of prompts whose group of completions had any
    reward variance (the others teach GRPO nothing), the mean reward and the fine-tunes' wall seconds per model
    (means over the models and runs). "" when no run trained by GRPO."""
    from mafl.finetune.rewards import get_reward

    def mean(values) -> float | None:
        values = [float(v) for v in values if v is not None]
        return sum(values) / len(values) if values else None

    def shown(value, fmt: str, scale: float = 1.0) -> str:
        return format(scale * value, fmt) if value is not None else "–"

    rows = []
    for (m, meth, d), runs in groups.items():
        by_iteration: dict[int, list[dict]] = {}
        for r in runs:
            for k, it in (r.finetune or {}).items():
                by_iteration.setdefault(int(k), []).extend(
                    x for x in ((it or {}).get("models") or {}).values() if x.get("objective") == "grpo")
        for k, models in sorted(by_iteration.items()):
            if not models:
                continue
            metrics = [x.get("grpo_metrics") or {} for x in models]
            rows.append([m, meth, d, str(k), get_reward(models[0].get("reward") or "majority").shown,
                         shown(mean(x.get("num_prompts") for x in models), ".1f"),
                         shown(mean(g.get("share_with_variance") for g in metrics), ".0f", 100.0),
                         shown(mean(g.get("mean_reward") for g in metrics), ".3f"),
                         shown(mean(x.get("seconds") for x in models), ".1f")])
    if not rows:
        return ""
    note = ("prompts: per model (its debate contexts with a target; a reward that does not read the gold answer gets "
            "none from problems without a strict majority). with variance: the share of prompts whose group of "
            "sampled completions did not all earn the same reward (GRPO learns from those only). Means over the "
            "models and the runs (seeds).")
    return markdown_table(["model", "method", "dataset", "iteration", "reward", "prompts/model",
                           "with variance (%)", "mean reward", "fine-tune s/model"], rows) + "\n\n" + note


STAGES = ("train_debate", "sets", "finetune", "eval_debate", "metrics")  # in the order an iteration runs them


def timing_table(results: Sequence[Results]) -> str:
    """Rows: the stages (each model's fine-tune under ``finetune``, which holds them all); columns: the
    iterations, the total and the stage's share of the run's time. Summed over ``results``; "" when none has
    timings."""
    sums: dict[str, dict[int, float]] = {}
    for r in results:
        for k, stages in (r.timings or {}).items():
            for stage, seconds in stages.items():
                sums.setdefault(stage, {})
                sums[stage][int(k)] = sums[stage].get(int(k), 0.0) + float(seconds)
    if not sums:
        return ""
    iterations = sorted({k for by in sums.values() for k in by})
    order = [x for x in STAGES if x in sums] + sorted(x for x in sums if x not in STAGES and "/" not in x)
    whole = sum(sum(sums[x].values()) for x in order) or 1.0
    rows = []
    for stage in order:
        total = sum(sums[stage].values())
        rows.append([stage, *(f"{sums[stage][k]:.1f}" if k in sums[stage] else "" for k in iterations),
                     f"{total:.1f}", f"{100 * total / whole:.0f}%"])
        if stage == "finetune":
            for model in sorted(x for x in sums if x.startswith("finetune/")):
                by = sums[model]
                rows.append([f"&nbsp;&nbsp;{model.split('/', 1)[1]}", *(f"{by[k]:.1f}" if k in by else ""
                                                                         for k in iterations),
                             f"{sum(by.values()):.1f}", ""])
    table = markdown_table(["stage", *(f"iter {k}" for k in iterations), "total", "share"], rows)
    note = (f"{len(results)} run(s). Each model's row is its own fine-tune's wall time (loading included); "
            f"finetune is the wall time of them all, less than their sum when a launcher runs them in parallel.")
    return table + "\n\n" + note


def report_main(argv: Sequence[str] | None = None) -> str:
    """The ``mafl report`` command: prints the report and returns its text."""
    parser = argparse.ArgumentParser(prog="mafl report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run folders, sweep folders or results.json files")
    parser.add_argument("--plot", metavar="DIR", default=None, help="also write PNG plots to DIR")
    parser.add_argument("--split", default="eval", help="eval (default) or train")
    parser.add_argument("--metric", default="accuracy/debate", help="the metric of the tables (default: %(default)s)")
    parser.add_argument("--compare", nargs=2, action="append", metavar=("A", "B"),
                        help="the paired difference A - B of two methods or iterations on the same problems, pooled "
                             "over seeds, with a 95%% paired-bootstrap interval; a side is METHOD[:ITERATION] "
                             "(default: the last iteration), e.g. --compare debate:0 single:0 or --compare "
                             "multiagent_ft:3 multiagent_ft:0; repeatable")
    args = parser.parse_args(list(argv) if argv is not None else None)
    skipped: list[str] = []
    try:
        results = load_results(args.paths, skipped)
        text = build_report(results, split=args.split, metric=args.metric, compare=args.compare)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"mafl report: {e}") from None
    for reason in skipped:  # another tool's results.json inside a sweep folder: left out, said once
        print(f"mafl report: left out {reason}", file=sys.stderr)
    if args.plot:
        from mafl.reporting.plots import write_cost_figure, write_paper_figures, write_plots

        written = write_plots(results, args.plot, split=args.split, metrics=[args.metric, *DIVERSITY_METRICS])
        written += write_paper_figures(results, args.plot, split=args.split, metric=args.metric)
        written += write_cost_figure(results, args.plot, split=args.split, metric=args.metric)
        text += "\n" + "\n".join(f"plot: {p}" for p in written) + "\n"
    sys.stdout.write(text)
    return text


if __name__ == "__main__":
    report_main()
