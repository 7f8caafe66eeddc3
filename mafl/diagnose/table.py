"""The diagnosis as a markdown table: one row per round-1 agreement pattern, then ``all``."""
from __future__ import annotations

COLUMNS = (
    ("pattern", None), ("problems", None), ("turns", None),
    ("acc r1", ("accuracy", "round1")), ("acc final", ("accuracy", "final")), ("acc fresh", ("accuracy", "fresh")),
    ("kept", ("behaviour", "kept")), ("adopted", ("behaviour", "adopted")), ("new", ("behaviour", "new")),
    ("unread", ("behaviour", "unreadable")),
    ("wrong→right", ("wrong_to_right",)), ("right→wrong", ("right_to_wrong",)),
    ("p(ans) final", ("probes", "p_answer_final")), ("p(ans) r1", ("probes", "p_answer_round1")),
    ("p(res) final", ("probes", "p_result_final")), ("p(res) r1", ("probes", "p_result_round1")),
    ("summary exact", ("summary_exact",)), ("p(copy)", ("copy_prob",)),
)
WITH_COUNT = ("wrong→right", "right→wrong", "summary exact", "p(copy)")  # shown with their denominators


def cell(stats: dict, path: tuple[str, ...], with_count: bool) -> str:
    value = stats
    for key in path:
        value = value[key]
    if value["mean"] is None:
        return "–"
    text = f"{value['mean']:.2f}"
    return f"{text} ({value['n']})" if with_count else text


def markdown_table(table: dict[str, dict]) -> str:
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|" + "|".join("---" if path is None and name == "pattern" else "---:" for name, path in COLUMNS) + "|"]
    for pattern, stats in table.items():
        cells = [pattern, str(stats["problems"]), str(stats["turns"])]
        cells += [cell(stats, path, name in WITH_COUNT) for name, path in COLUMNS[3:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
