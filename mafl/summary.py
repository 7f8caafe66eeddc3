"""What a run prints: one line per iteration as it is measured, and a table at the end."""
from __future__ import annotations

from typing import Sequence

from mafl.metrics.cells import format_cell, society_record

# (metric, label) of the society-level numbers in the table at the end of a run
SHOWN = (
    ("accuracy/debate", "debate"),
    ("accuracy/agent_round1", "single agent"),
    ("accuracy/round1_majority", "round-1 majority"),
    ("flips/round1-2/wrong_right", "round 1→2 wrong→right"),
    ("flips/round1-2/right_wrong", "round 1→2 right→wrong"),
    ("consensus", "consensus"),
    ("kl/agents", "KL(agents)"),
    ("embedding_dissimilarity", "embedding dissim."),
)


# the society-level numbers of the line printed after every iteration (the table at the end has them all)
ITERATION_LINE = ("accuracy/debate", "accuracy/agent_round1", "consensus")
WIDTH = 80  # the final table fits a terminal of this many columns


def print_iteration(iteration: int, records: Sequence) -> None:
    from mafl.progress import line

    parts = [f"{label} {format_cell(r, m)}" for m, label in SHOWN
             if m in ITERATION_LINE and (r := society_record(records, m, iteration))]
    line(f"iteration {iteration}: " + " | ".join(parts))


def sets_line(iteration: int, reports: dict) -> str:
    """One line on an iteration's fine-tuning sets: examples per model (% whose answer is right, for analysis
    only), its preference pairs when it has some (% whose chosen side is right and rejected side wrong), or its GRPO
    prompts instead (% whose reward's target is the gold answer), and the problems that gave none for lack of a
    majority."""
    parts = []
    for name, rep in reports.items():
        acc = rep.get("accuracy")
        part = f"{name} {rep['size']}" + (f" ({100 * acc:.0f}%)" if acc is not None else "")
        if rep.get("prompts") is not None:
            prompts, target_acc = rep["prompts"]["prompts"], rep["prompts"].get("target_accuracy")
            part = f"{name} {prompts} prompts" + (f" ({100 * target_acc:.0f}% right targets)"
                                                   if target_acc is not None else "")
        if rep.get("pairs") is not None:
            pairs, label_acc = rep["pairs"]["pairs"], rep["pairs"].get("label_accuracy")
            part += f" + {pairs} pairs" + (f" ({100 * label_acc:.0f}% right>wrong)" if label_acc is not None else "")
        parts.append(part)
    skipped = max((rep.get("skipped_no_majority", 0) for rep in reports.values()), default=0)
    return f"iteration {iteration} sets: " + ", ".join(parts) + f" | {skipped} problems without a majority"


def summary_table(results, width: int = WIDTH) -> str:
    """A plain-text table: one row per metric, one column per iteration (accuracies in %, ± standard error); when
    the iterations do not fit in ``width`` columns, they continue in a second block below."""
    iterations = sorted({r.iteration for r in results.records if r.split == "eval"})
    shown = [(m, label) for m, label in SHOWN if any(society_record(results.records, m, k) for k in iterations)]
    title = (f"{results.method} on {results.dataset} ({results.model}), eval problems\n"
             "accuracy and consensus in %, ± standard error")
    if not shown:
        return title + "\n(no eval metrics)"
    cells = {k: [format_cell(society_record(results.records, m, k), m) for m, _ in shown] for k in iterations}
    heads = {k: f"iteration {k}" for k in iterations}
    label_w = max(len(label) for _, label in shown)
    col_w = {k: max(len(heads[k]), *(len(c) for c in cells[k])) for k in iterations}
    blocks, block = [], []
    for k in iterations:
        if block and label_w + sum(2 + col_w[j] for j in block + [k]) > width:
            blocks.append(block)
            block = []
        block.append(k)
    blocks.append(block)
    lines = [title]
    for block in blocks:
        lines.append("")
        lines.append(" " * label_w + "".join(f"  {heads[k]:>{col_w[k]}}" for k in block))
        for i, (_, label) in enumerate(shown):
            lines.append(f"{label:<{label_w}}" + "".join(f"  {cells[k][i]:>{col_w[k]}}" for k in block))
    return "\n".join(lines)


def run_notes(results) -> list[str]:
    """Lines on what a run could not measure (and why) and, for a run that talked to an API, its usage
    (``usage.json`` beside ``results.json``)."""
    import json

    from mafl.backends.usage import USAGE_FILE, usage_line

    reasons: dict[str, list[str]] = {}
    for metric, reason in sorted(results.unavailable.items()):
        reasons.setdefault(reason, []).append(metric)
    lines = [f"unavailable: {', '.join(metrics)} ({reason})" for reason, metrics in reasons.items()]
    usage = results.path.parent / USAGE_FILE if results.path is not None else None
    if usage is not None and usage.exists():
        lines.append(f"API usage: {usage_line(json.loads(usage.read_text()))}")
    return lines


def print_summary(results) -> None:
    from mafl.progress import console

    console().print()
    console().print(summary_table(results), markup=False, soft_wrap=True)
    for text in run_notes(results):
        console().print(text, markup=False, soft_wrap=True)
