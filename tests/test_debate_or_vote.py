"""The one sweep of docs/debate_or_vote.md, end to end on a tiny random model: every baseline runs, each row has
its cost, the accuracy-vs-tokens figure is drawn from the real runs, and the paired comparison reads their
transcripts."""
from __future__ import annotations

import json

import pytest

from helpers import compose_cfg

METHODS = ["single", "majority", "majority_tokens", "self_refine", "debate"]


@pytest.mark.slow
def test_the_debate_or_vote_sweep_on_a_tiny_random_model(talking_model_dir, tmp_path):
    from mafl.metrics.results import load_results
    from mafl.pipeline import run
    from mafl.reporting.plots import cost_points
    from mafl.reporting.report import report_main

    sweep = tmp_path / "sweep"
    common = ["logger=none", f"model.path={talking_model_dir}", "metrics.diversity=false", "dataset.n_eval=4",
              "debate.max_new_tokens=24", "debate.summary_max_new_tokens=16", "seed=0"]
    for method in METHODS:
        run(compose_cfg([*common, f"method={method}", f"run_dir={sweep / method}"]))

    # the token-matched majority measured the debate first: the same debate as method=debate's, so its target
    target = json.loads((sweep / "majority_tokens" / "iter_0" / "eval" / "token_target.json").read_text())
    debate = [json.loads(x) for x in (sweep / "debate" / "iter_0" / "eval" / "transcripts.jsonl").open()]
    spent = [sum(u["num_tokens"] + u["summary_tokens"] for rnd in d["rounds"] for u in rnd) for d in debate]
    assert target["target_tokens"] == pytest.approx(sum(spent) / len(spent))
    for d in [json.loads(x) for x in (sweep / "majority_tokens" / "iter_0" / "eval" / "transcripts.jsonl").open()]:
        tokens = [u["num_tokens"] for u in d["rounds"][0]]
        assert sum(tokens) >= target["target_tokens"] > sum(tokens[:-1])

    plots = tmp_path / "plots"
    text = report_main([str(sweep), "--plot", str(plots), "--compare", "debate:0", "single:0",
                        "--compare", "majority_tokens", "debate"])
    figure = plots / "eval_figure_cost_arithmetic.png"
    assert figure.exists() and figure.stat().st_size > 1000 and f"plot: {figure}" in text
    points = cost_points(load_results(sweep))["arithmetic"]
    assert sorted(meth for _, meth in points) == sorted(METHODS)
    tokens = {meth: x.value for (_, meth), (x, _) in points.items()}
    assert tokens["majority_tokens"] >= tokens["debate"] > tokens["single"] > 0
    # every row of the cost table, with the tokens the figure drew
    cost = text[text.index("## cost of each row"):].split("\n\n")[1]
    assert all(f"| {meth} | arithmetic |" in cost for meth in METHODS)
    assert "## paired difference on eval: debate:0 − single:0" in text
    assert "## failure measures on eval by iteration: arithmetic" in text and "voted_out (%)" in text


def test_the_cost_table_shows_dollars_of_api_runs_and_wall_times(tmp_path):
    from mafl.backends.usage import UsageLedger
    from mafl.metrics.results import Results, load_results, write_results
    from mafl.metrics.stats import MetricRecord
    from mafl.reporting.report import build_report

    def make(method, tokens, timings, usage=None):
        run = tmp_path / method
        cfg = {"method": {"name": method}, "dataset": {"name": "gsm8k"}, "model": {"name": "gpt35"}, "seed": 0}
        recs = [MetricRecord(0, "eval", "accuracy/debate", 0.5, 0.05, 100),
                MetricRecord(0, "eval", "tokens/answers", tokens, 1.0, 100),
                MetricRecord(0, "eval", "tokens/summaries", 0.0, 0.0, 100),
                MetricRecord(0, "eval", "tokens/total", tokens, 1.0, 100)]
        write_results(run, Results.from_config(cfg, recs, timings=timings))
        if usage is not None:
            usage.attach(run)
            usage.save()

    ledger = UsageLedger({"gpt-3.5-turbo-0125": {"prompt": 0.5, "completion": 1.5}})
    ledger.add("generator_0", "gpt-3.5-turbo-0125", prompt_tokens=2_000_000, completion_tokens=1_000_000)
    make("debate", 400.0, {"0": {"eval_debate": 12.5, "metrics": 2.5}}, ledger)
    make("single", 50.0, {"0": {"eval_debate": 3.0}})
    text = build_report(load_results(tmp_path))
    cost = text[text.index("## cost of each row"):]
    assert "| tokens/answers | tokens/summaries | tokens/total | eval debate (s) | whole run (s) | US$ per run |" in cost
    assert "| gpt35 | debate | gsm8k | 50.0 ± 5.0 (n=1) | 400.0 ± 1.0 | 0.0 ± 0.0 | 400.0 ± 1.0 | 12.5 | 15.0 | 2.5000 |" in cost
    assert "| gpt35 | single | gsm8k | 50.0 ± 5.0 (n=1) | 50.0 ± 1.0 | 0.0 ± 0.0 | 50.0 ± 1.0 | 3.0 | 3.0 | – |" in cost
