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
    from mafl.plots import cost_points
    from mafl.report import report_main

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
