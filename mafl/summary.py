"""What a run prints: one line per iteration as it is measured, and a table at the end."""
from __future__ import annotations

from typing import Sequence

# (metric, label) of the society-level numbers shown after every iteration
SHOWN = (
    ("accuracy/debate", "debate"),
    ("accuracy/agent_round1", "single agent"),
    ("accuracy/round1_majority", "round-1 majority"),
    ("consensus", "consensus"),
    ("kl/agents", "KL(agents)"),
    ("embedding_dissimilarity", "embedding dissim."),
)


def _pick(records: Sequence, metric: str, iteration: int | None = None, split: str = "eval"):
    for r in records:
        if r.metric == metric and r.agent is None and getattr(r, "other", None) is None and r.split == split \
                and (iteration is None or r.iteration == iteration):
            return r
    return None


def fmt(r) -> str:
    if r is None:
        return "-"
    if r.metric.startswith(("accuracy", "consensus")):
        se = f" ± {100 * r.stderr:.1f}" if r.stderr is not None else ""
        return f"{100 * r.value:.1f}{se}"
    se = f" ± {r.stderr:.3f}" if r.stderr is not None else ""
    return f"{r.value:.3f}{se}"


def print_iteration(iteration: int, records: Sequence) -> None:
    parts = [f"{label} {fmt(_pick(records, m, iteration))}" for m, label in SHOWN if _pick(records, m, iteration)]
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
    shown = [(m, label) for m, label in SHOWN if any(_pick(results.records, m, k) for k in iterations)]
    lines = [
        f"{results.method} on {results.dataset} ({results.model}), eval accuracy in % ± SE",
        "",
        "| iteration | " + " | ".join(label for _, label in shown) + " |",
        "|---" * (len(shown) + 1) + "|",
    ]
    for k in iterations:
        lines.append(f"| {k} | " + " | ".join(fmt(_pick(results.records, m, k)) for m, _ in shown) + " |")
    return "\n".join(lines)


def print_summary(results) -> None:
    try:
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(summary_table(results)))
    except ImportError:  # pragma: no cover - rich is a dependency
        print(summary_table(results))
