"""What a run prints: one line per iteration as it is measured, and a table at the end."""
from __future__ import annotations

from typing import Sequence

from mafl.metrics.aggregate import format_cell, markdown_table, society_record

# (metric, label) of the society-level numbers shown after every iteration
SHOWN = (
    ("accuracy/debate", "debate"),
    ("accuracy/agent_round1", "single agent"),
    ("accuracy/round1_majority", "round-1 majority"),
    ("consensus", "consensus"),
    ("kl/agents", "KL(agents)"),
    ("embedding_dissimilarity", "embedding dissim."),
)


def print_iteration(iteration: int, records: Sequence) -> None:
    parts = [f"{label} {format_cell(r, m)}" for m, label in SHOWN if (r := society_record(records, m, iteration))]
    print(f"iteration {iteration}: " + " | ".join(parts), flush=True)


def sets_line(iteration: int, reports: dict) -> str:
    """One line on an iteration's fine-tuning sets: examples per model (% whose answer is right, for analysis
    only) and the problems that gave none for lack of a majority."""
    parts = []
    for name, rep in reports.items():
        acc = rep.get("accuracy")
        parts.append(f"{name} {rep['size']}" + (f" ({100 * acc:.0f}%)" if acc is not None else ""))
    skipped = max((rep.get("skipped_no_majority", 0) for rep in reports.values()), default=0)
    return f"iteration {iteration} sets: " + ", ".join(parts) + f" | {skipped} problems without a majority"


def summary_table(results) -> str:
    """A Markdown table: one row per iteration, accuracies in %, ± standard error."""
    iterations = sorted({r.iteration for r in results.records if r.split == "eval"})
    shown = [(m, label) for m, label in SHOWN if any(society_record(results.records, m, k) for k in iterations)]
    rows = [[str(k), *(format_cell(society_record(results.records, m, k), m) for m, _ in shown)] for k in iterations]
    return "\n".join([f"{results.method} on {results.dataset} ({results.model}), eval accuracy in % ± SE", "",
                      markdown_table(["iteration", *(label for _, label in shown)], rows)])


def print_summary(results) -> None:
    try:
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(summary_table(results)))
    except ImportError:  # pragma: no cover - rich is a dependency
        print(summary_table(results))
