"""PNG plots of a metric against the iteration: one figure per metric and dataset, one line per model/method
(several runs of the same model/method: their mean, with the standard error across runs as error bars)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Sequence

from mafl.metrics.aggregate import curve, group_runs, is_percent, unit
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
        scale = 100.0 if is_percent(metric) else 1.0
        for dataset in sorted({g[2] for g in groups}):
            lines = {(m, meth): curve(runs, metric, split) for (m, meth, d), runs in groups.items() if d == dataset}
            lines = {k: c for k, c in lines.items() if c}
            if not lines:
                continue
            fig = Figure(figsize=(5, 3.5))
            ax = fig.subplots()
            for (model, method), c in lines.items():
                xs = list(c)
                ys = [c[k].value * scale for k in xs]
                err = [(c[k].stderr or 0.0) * scale for k in xs]
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{method} ({model})")
            ax.set_xlabel("iteration")
            ax.set_ylabel(f"{metric} ({unit(metric)})" if unit(metric) else metric)
            ax.set_title(f"{dataset}, {split}")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
            fig.tight_layout()
            path = out_dir / plot_file_name(metric, dataset, split)
            fig.savefig(path, dpi=120)
            written.append(path)
    return written
