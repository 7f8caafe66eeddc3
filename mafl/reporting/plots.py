"""PNG plots of the runs against the iteration, one line per model/method (several runs of the same model/method:
their mean, with the standard error across runs as error bars):

* :func:`write_plots`: one figure per metric and dataset;
* :func:`write_paper_figures`: the paper's two figures per dataset, accuracy against the iteration and the
  diversity metrics against the iteration (one panel each), and Table 1 (the metric at the final iteration,
  datasets as columns) drawn as a PNG;
* :func:`write_cost_figure`: the metric against the tokens generated per problem (``tokens/total``), one point per
  model/method at its final iteration (DebateLLM's figure): error bars are the standard errors of both (across
  runs for several seeds, else over problems).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Sequence

from mafl.reporting.aggregate import TOKENS, Cell, curve, final_cell, group_runs, is_percent, unit
from mafl.metrics.results import Results


def plot_file_name(metric: str, dataset: str, split: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{split}_{metric}_{dataset}") + ".png"


def write_plots(results: Sequence[Results], out_dir: str | Path, *, split: str = "eval",
                metrics: Sequence[str] = ("accuracy/debate",)) -> list[Path]:
    """One PNG per metric and dataset that the runs measured; returns the files written."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("plots need matplotlib: pip install matplotlib")
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (e.g. a notebook's) is left alone

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = group_runs(results)
    written: list[Path] = []
    for metric in dict.fromkeys(metrics):
        for dataset in sorted({g[2] for g in groups}):
            lines = {(m, meth): curve(runs, metric, split) for (m, meth, d), runs in groups.items() if d == dataset}
            lines = {k: c for k, c in lines.items() if c}
            if not lines:
                continue
            fig = Figure(figsize=(5, 3.5))
            _draw_curves(fig.subplots(), lines, metric, f"{dataset}, {split}")
            fig.tight_layout()
            path = out_dir / plot_file_name(metric, dataset, split)
            fig.savefig(path, dpi=120)
            written.append(path)
    return written


def _draw_curves(ax, lines: dict, metric: str, title: str) -> None:
    scale = 100.0 if is_percent(metric) else 1.0
    for (model, method), c in lines.items():
        xs = list(c)
        ys = [c[k].value * scale for k in xs]
        err = [(c[k].stderr or 0.0) * scale for k in xs]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{method} ({model})")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{metric} ({unit(metric)})" if unit(metric) else metric)
    ax.set_title(title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")


def write_paper_figures(results: Sequence[Results], out_dir: str | Path, *, split: str = "eval",
                        metric: str = "accuracy/debate",
                        diversity: Sequence[str] = ("kl/agents", "embedding_dissimilarity")) -> list[Path]:
    """``figure_accuracy_<dataset>.png``, ``figure_diversity_<dataset>.png`` (the diversity metrics the runs
    measured, a panel each, a line for each method that measured them) and ``table_<split>.png``; returns the files written."""
    from matplotlib.figure import Figure

    from mafl.reporting.aggregate import final_cells

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = group_runs(results)
    datasets = sorted({g[2] for g in groups})
    written: list[Path] = []
    for dataset in datasets:
        runs = {(m, meth): r for (m, meth, d), r in groups.items() if d == dataset}
        lines = {k: c for k, r in runs.items() if (c := curve(r, metric, split))}
        if lines:
            fig = Figure(figsize=(6, 4))
            _draw_curves(fig.subplots(), lines, metric, f"{dataset}, {split}: {metric} against the iteration")
            fig.tight_layout()
            written.append(out_dir / plot_file_name(f"figure_{metric.split('/')[0]}", dataset, split))
            fig.savefig(written[-1], dpi=120)
        panels = {x: {k: c for k, r in runs.items() if (c := curve(r, x, split))} for x in diversity}
        panels = {x: lines for x, lines in panels.items() if lines}
        if panels:
            fig = Figure(figsize=(5 * len(panels), 4))
            axes = fig.subplots(1, len(panels), squeeze=False)[0]
            for ax, (x, lines) in zip(axes, panels.items()):
                _draw_curves(ax, lines, x, f"{dataset}, {split}: {x}")
            fig.tight_layout()
            written.append(out_dir / plot_file_name("figure_diversity", dataset, split))
            fig.savefig(written[-1], dpi=120)
    rows = list(dict.fromkeys((g[0], g[1]) for g in groups))
    if rows:
        cells = [[model, method, *final_cells(groups, model, method, datasets, metric, split)] for model, method in rows]
        fig = Figure(figsize=(3 + 2.2 * len(datasets), 0.6 + 0.32 * len(rows)))
        ax = fig.subplots()
        ax.axis("off")
        table = ax.table(cellText=cells, colLabels=["model", "method", *datasets], loc="center", cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.auto_set_column_width(list(range(2 + len(datasets))))
        ax.set_title(f"{metric} on {split} at the final iteration (mean ± SE)", fontsize=9)
        written.append(out_dir / plot_file_name("table", metric, split))
        fig.savefig(written[-1], dpi=150, bbox_inches="tight")
    return written


def cost_points(results: Sequence[Results], *, split: str = "eval",
                metric: str = "accuracy/debate") -> dict[str, dict[tuple[str, str], tuple[Cell, Cell]]]:
    """{dataset: {(model, method): (tokens/total cell, metric cell)}} at the final iteration, for every
    model/method that measured both."""
    out: dict[str, dict] = {}
    for (m, meth, d), runs in group_runs(results).items():
        x, y = final_cell(runs, TOKENS, split), final_cell(runs, metric, split)
        if x is not None and y is not None:
            out.setdefault(d, {})[(m, meth)] = (x, y)
    return dict(sorted(out.items()))


def write_cost_figure(results: Sequence[Results], out_dir: str | Path, *, split: str = "eval",
                      metric: str = "accuracy/debate") -> list[Path]:
    """``<split>_figure_cost_<dataset>.png``: ``metric`` against ``tokens/total`` per problem for every
    model/method that measured both; returns the files written."""
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scale = 100.0 if is_percent(metric) else 1.0
    written: list[Path] = []
    for dataset, points in cost_points(results, split=split, metric=metric).items():
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        for (model, method), (x, y) in points.items():
            ax.errorbar([x.value], [y.value * scale], xerr=[x.stderr or 0.0], yerr=[(y.stderr or 0.0) * scale],
                        marker="o", capsize=3, linestyle="none", label=f"{method} ({model})")
            ax.annotate(method, (x.value, y.value * scale), textcoords="offset points", xytext=(4, 4),
                        fontsize="x-small")
        ax.set_xlabel("generated tokens per problem (answers + summaries)")
        ax.set_ylabel(f"{metric} ({unit(metric)})" if unit(metric) else metric)
        ax.set_title(f"{dataset}, {split}: {metric} against its cost")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
        fig.tight_layout()
        written.append(out_dir / plot_file_name("figure_cost", dataset, split))
        fig.savefig(written[-1], dpi=120)
    return written
