"""The diagnosis as markdown: a table with one row per round-1 agreement pattern, then ``all``; and, where the
debate summarizes, the copy probability by the number's position in the exact summary."""
from __future__ import annotations

COLUMNS = (
    ("pattern", None), ("problems", None), ("turns", None),
    ("acc r1", ("accuracy", "round1")), ("acc final", ("accuracy", "final")), ("acc fresh", ("accuracy", "fresh")),
    ("vote r1", ("accuracy", "vote_round1")), ("vote final", ("accuracy", "vote_final")),
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


def copy_position_table(table: dict[str, dict]) -> str:
    """p(copy) of the k-th number of the exact summary, per pattern ("" when no summary was read)."""
    width = max(len(stats["copy_prob_by_position"]) for stats in table.values())
    if not width:
        return ""
    ordinal = {1: "1st", 2: "2nd", 3: "3rd"}
    names = [f"p(copy) {ordinal.get(k, f'{k}th')}" for k in range(1, width + 1)]
    lines = ["| pattern | " + " | ".join(names) + " |", "|---|" + "---:|" * width]
    for pattern, stats in table.items():
        cells = [cell({"v": v}, ("v",), True) for v in stats["copy_prob_by_position"]]
        lines.append("| " + " | ".join([pattern, *cells, *["–"] * (width - len(cells))]) + " |")
    return "\n".join(lines)
