"""`mafl report` on hand-made results files: Table 1, the iteration curve, diversity, seeds, plots, errors."""
from __future__ import annotations

import math

import pytest

from mafl.metrics import MetricRecord, Results, write_results
from mafl.reporting.report import report_main


def rec(k, metric, value, se=0.02):
    return MetricRecord(k, "eval", metric, value, se, 50)


def make_run(root, method, dataset, accuracies, seed=0, diversity=False):
    config = {"method": {"name": method}, "dataset": {"name": dataset}, "model": {"name": "tiny"}, "seed": seed}
    records = [rec(k, "accuracy/debate", v) for k, v in enumerate(accuracies)]
    records.append(MetricRecord(len(accuracies) - 1, "eval", "accuracy/agent_final", 0.99, 0.0, 50, agent=0))
    records.append(MetricRecord(0, "train", "accuracy/debate", 0.77, 0.01, 50))
    if diversity:
        records += [rec(k, "consensus", 0.9 - 0.1 * k) for k in range(len(accuracies))]
        records += [rec(k, "kl/agents", 0.01 + 0.1 * k, 0.005) for k in range(len(accuracies))]
    path = root / f"{method}_{dataset}_s{seed}"
    write_results(path, Results.from_config(config, records))
    return path


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun" / "2025-05-01"
    make_run(root, "debate", "gsm8k", [0.40])
    make_run(root, "debate", "math", [0.20])
    make_run(root, "multiagent_ft", "gsm8k", [0.40, 0.50, 0.60], seed=0, diversity=True)
    make_run(root, "multiagent_ft", "gsm8k", [0.40, 0.52, 0.64], seed=1, diversity=True)
    make_run(root, "multiagent_ft", "math", [0.20, 0.30, 0.35])
    return tmp_path / "multirun"


def row(text, *cells):
    return next(line for line in text.splitlines() if line.startswith("| " + " | ".join(cells) + " |"))


def test_table_one_and_iteration_curve(sweep, capsys):
    text = report_main([str(sweep)])
    assert capsys.readouterr().out == text
    assert "| model | method | answers/problem | tokens/problem | gsm8k | math |" in text
    # one run: value ± its own stderr, in percent
    assert row(text, "tiny", "debate") == "| tiny | debate | – | – | 40.0 ± 2.0 (n=1) | 20.0 ± 2.0 (n=1) |"
    # two seeds: the mean of the final iterations and the standard error across seeds
    finals = [0.60, 0.64]
    se = math.sqrt(sum((x - 0.62) ** 2 for x in finals) / 1) / math.sqrt(2)
    assert row(text, "tiny", "multiagent_ft").startswith(f"| tiny | multiagent_ft | – | – | 62.0 ± {100 * se:.1f} (n=2) | 35.0 ± 2.0 (n=1) |")
    assert "across k runs (seeds)" in text
    per_seed = text[text.index("at the final iteration, per seed"):]
    assert "| tiny | multiagent_ft | gsm8k | 0 | 60.0 ± 2.0 |" in per_seed
    assert "| tiny | multiagent_ft | gsm8k | 1 | 64.0 ± 2.0 |" in per_seed
    assert "| tiny | debate |" not in per_seed.split("##")[0]  # one run: its cell above already is its own
    # the paper's method order: debate before multiagent_ft
    assert text.index("| tiny | debate |") < text.index("| tiny | multiagent_ft |")
    # iteration curve for gsm8k: three iterations, debate only at iteration 0
    curve = text[text.index("by iteration: gsm8k"):]
    assert "| model | method | iter 0 | iter 1 | iter 2 |" in curve
    assert row(curve, "tiny", "debate") == "| tiny | debate | 40.0 ± 2.0 (n=1) | – | – |"
    assert "| tiny | multiagent_ft | 40.0 ± 0.0 (n=2) | 51.0 ± 1.0 (n=2) | 62.0 ± 2.0 (n=2) |" in curve


def test_diversity_table_and_other_split(sweep):
    text = report_main([str(sweep)])
    div = text[text.index("## diversity on eval by iteration: gsm8k"):]
    assert "| model | method | iteration | consensus (%) | kl/agents |" in div
    assert "| tiny | multiagent_ft | 2 | 70.0 ± 0.0 (n=2) | 0.210 ± 0.000 (n=2) |" in div
    assert "diversity on eval by iteration: math" not in text  # no diversity measured on math
    train = report_main([str(sweep), "--split", "train"])
    assert row(train, "tiny", "debate") == "| tiny | debate | – | – | 77.0 ± 1.0 (n=1) | 77.0 ± 1.0 (n=1) |"
    agent = report_main([str(sweep), "--metric", "accuracy/agent_final"])
    assert "| tiny | debate | – | – | – |" in agent  # only society-level records (agent=None) are tabulated


def test_plots_are_written(sweep, tmp_path):
    out = tmp_path / "plots"
    text = report_main([str(sweep), "--plot", str(out)])
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"eval_accuracy_debate_gsm8k.png", "eval_accuracy_debate_math.png", "eval_consensus_gsm8k.png",
            "eval_kl_agents_gsm8k.png",
            # the paper's figures: accuracy per dataset, diversity where it was measured, and the table
            "eval_figure_accuracy_gsm8k.png", "eval_figure_accuracy_math.png", "eval_figure_diversity_gsm8k.png",
            "eval_table_accuracy_debate.png"} == names
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000
        assert f"plot: {p}" in text


def test_a_folder_without_results_is_a_clear_error(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit, match="no results.json under"):
        report_main([str(tmp_path / "run")])


def test_methods_are_ordered_as_registered_with_their_variants():
    from mafl.reporting.aggregate import group_runs

    def run(name, label):
        return Results.from_config({"method": {"name": name, "label": label}, "dataset": {"name": "d"},
                                    "model": {"name": "m"}}, [rec(0, "accuracy/debate", 0.5)])

    runs = [run("multiagent_ft", "multiagent_ft_no_critics"), run("someone_elses", "aaa"),
            run("majority_ft", "majority_ft_transfer"), run("multiagent_ft", "multiagent_ft"), run("debate", "debate")]
    assert [g[1] for g in group_runs(runs)] == ["debate", "majority_ft_transfer", "multiagent_ft",
                                                "multiagent_ft_no_critics", "aaa"]


def test_the_console_summary_and_the_report_share_one_cell_format():
    from mafl.reporting.aggregate import Cell, combine, format_cell
    from mafl.summary import summary_table

    results = Results.from_config({"method": {"name": "debate"}, "dataset": {"name": "d"}, "model": {"name": "m"}},
                                  [rec(0, "accuracy/debate", 0.4), rec(0, "kl/agents", 0.01, 0.005)])
    assert summary_table(results).splitlines()[3:] == ["              iteration 0",
                                                       "debate         40.0 ± 2.0",
                                                       "KL(agents)  0.010 ± 0.005"]
    assert format_cell(None, "kl/agents") == "–"
    assert format_cell(combine([(0.5, 0.1), (0.7, 0.1)]), "accuracy/debate") == "60.0 ± 10.0 (n=2)"
    assert combine([(0.5, None)]) == Cell(0.5, None, 1)


def test_another_tool_s_results_json_is_one_line_or_left_out(sweep, tmp_path, capsys):
    """lm-evaluation-harness writes a results.json too: named, it is one line; inside a sweep folder it is left out
    (said once), and the report is the sweep's own."""
    import json
    import os
    import subprocess
    import sys

    foreign = tmp_path / "lm_eval" / "results.json"
    foreign.parent.mkdir()
    foreign.write_text(json.dumps({"results": {"gsm8k": {"exact_match,strict-match": 0.4}}, "config": {"model": "x"},
                                   "versions": {"gsm8k": 3}}))
    out = subprocess.run([sys.executable, "-m", "mafl", "report", str(foreign)], capture_output=True, text=True)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == (f"mafl report: {foreign} is not a mafl results file (it holds results, config, "
                                  "versions; a mafl run's has method, dataset and records)")
    for text, said in (("[1, 2]", "it holds a JSON list"), ("{oops", "not JSON")):
        foreign.write_text(text)
        with pytest.raises(SystemExit, match=f"^mafl report: {foreign} is not a mafl results file.*{said}"):
            report_main([str(foreign)])
    with pytest.raises(SystemExit, match=f"^mafl report: {foreign} is not a mafl results file"):
        report_main([str(foreign.parent)])  # a folder of only another tool's
    inside = sweep / "2025-05-01" / "lm_eval" / "results.json"
    inside.parent.mkdir()
    inside.write_text(json.dumps({"results": {}, "versions": {}}))
    capsys.readouterr()
    text = report_main([str(sweep)])
    assert text == report_main([str(sweep / "2025-05-01" / name) for name in sorted(os.listdir(sweep / "2025-05-01"))
                               if name != "lm_eval"])  # the same report as without it
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mafl report: left out {inside} is not a mafl results file (it holds results, versions; a mafl "
                   "run's has method, dataset and records)"]
