"""Paired comparisons (``mafl report --compare A B``) on synthetic run folders of known effect: the interval
covers the true effect, excludes 0 for a clear effect and includes it for none, it is narrower than the unpaired
standard errors suggest, and runs of different problems are refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mafl.reporting.paired import Side, compare, paired_bootstrap
from mafl.metrics.results import Results, load_results, write_results
from mafl.metrics.stats import MetricRecord, mean_stderr
from mafl.reporting.report import report_main
from mafl.rundir import atomic_write_jsonl


def write_run(root: Path, method: str, seed: int, outcomes: dict[int, dict[str, bool]],
              weights: str | None = None) -> Path:
    """A run folder: results.json (one accuracy record per iteration) and each iteration's eval transcripts
    (``outcomes[k]``: problem id -> correct); ``weights``: the base weights' hash it records."""
    run = root / f"{method}_seed{seed}"
    records = []
    for k, correct in outcomes.items():
        atomic_write_jsonl(run / f"iter_{k}" / "eval" / "transcripts.jsonl",
                           ({"problem": {"id": pid, "question": "q", "answer": "1"}, "rounds": [],
                             "final_answer": "1", "correct": ok} for pid, ok in correct.items()))
        value, se = mean_stderr([float(v) for v in correct.values()])
        records.append(MetricRecord(k, "eval", "accuracy/debate", value, se, len(correct)))
    cfg = {"method": {"name": method, "label": method}, "dataset": {"name": "arithmetic"},
           "model": {"name": "tiny"}, "seed": seed}
    write_results(run, Results.from_config(cfg, records, model_weights=weights))
    return run


def synthetic(rng, problems: int, effect: float, seeds: int = 3):
    """Per problem a shared difficulty; A is right with p + effect, B with p, on each seed (so A - B has mean
    ``effect`` over the problems' distribution)."""
    p = rng.uniform(0.2, 0.7, size=problems)
    ids = [f"p{i:04d}" for i in range(problems)]
    a = [dict(zip(ids, (rng.random(problems) < p + effect).tolist())) for _ in range(seeds)]
    b = [dict(zip(ids, (rng.random(problems) < p).tolist())) for _ in range(seeds)]
    return a, b


def folders(root: Path, a, b) -> list[Results]:
    for s, (ca, cb) in enumerate(zip(a, b)):
        write_run(root, "debate", s, {0: ca})
        write_run(root, "single", s, {0: cb})
    return load_results(root)


def test_the_interval_covers_a_known_effect_and_excludes_zero(tmp_path):
    rng = np.random.default_rng(1)
    (d,) = compare(folders(tmp_path, *synthetic(rng, 400, 0.15)), Side.parse("debate:0"), Side.parse("single:0"),
                   samples=2000)
    assert d.low < 0.15 < d.high and d.low > 0
    assert d.seeds == ("0", "1", "2") and d.problems == 400 and len(d.per_seed) == 3
    assert d.difference == pytest.approx(d.a_accuracy - d.b_accuracy)


def test_no_effect_includes_zero(tmp_path):
    rng = np.random.default_rng(2)
    (d,) = compare(folders(tmp_path, *synthetic(rng, 400, 0.0)), Side("debate"), Side("single"), samples=2000)
    assert d.low < 0 < d.high


def test_the_paired_bootstrap_is_calibrated_and_narrower_than_unpaired_errors():
    rng = np.random.default_rng(3)
    covered, widths, unpaired = 0, [], []
    for rep in range(60):
        p = rng.uniform(0.05, 0.95, size=300)  # much of a problem's outcome is its difficulty: shared by A and B
        a = (rng.random((3, 300)) < np.clip(p + 0.05, 0, 1)).astype(float)
        b = (rng.random((3, 300)) < p).astype(float)
        true = float(np.clip(p + 0.05, 0, 1).mean() - p.mean())
        mean, low, high = paired_bootstrap(a - b, samples=1000, seed=rep)
        covered += low <= true <= high
        widths.append(high - low)
        unpaired.append(2 * 1.96 * np.hypot(a.mean(0).std(ddof=1), b.mean(0).std(ddof=1)) / np.sqrt(300))
    assert covered / 60 >= 0.85  # a 95% interval
    assert np.mean(widths) < 0.8 * np.mean(unpaired)


def test_two_iterations_of_one_method_and_the_report(tmp_path, capsys):
    ids = [f"p{i}" for i in range(50)]
    for s in range(2):  # iteration 2 fixes 10 problems iteration 0 got wrong, on both seeds
        write_run(tmp_path, "multiagent_ft", s, {0: {p: i % 2 == 0 for i, p in enumerate(ids)},
                                                  2: {p: i % 2 == 0 or i < 20 for i, p in enumerate(ids)}})
    text = report_main([str(tmp_path), "--compare", "multiagent_ft:2", "multiagent_ft:0"])
    assert "## paired difference on eval: multiagent_ft:2 − multiagent_ft:0" in text
    row = next(line for line in text.splitlines() if line.startswith("| tiny | arithmetic | multiagent_ft:2 |"))
    assert "| 2 | 50 | 70.0 | 50.0 | +20.0 |" in row and row.endswith("| +20.0 +20.0 |")
    # the last iteration by default
    (d,) = compare(load_results(tmp_path), Side("multiagent_ft"), Side.parse("multiagent_ft:0"))
    assert d.difference == pytest.approx(0.2)


def test_refuses_runs_of_other_problems_and_unknown_sides(tmp_path):
    write_run(tmp_path, "debate", 0, {0: {"a": True, "b": False}})
    write_run(tmp_path, "single", 0, {0: {"a": True, "c": False}})
    with pytest.raises(ValueError, match=r"seed 0 answered different problems"):
        compare(load_results(tmp_path), Side("debate"), Side("single"))
    with pytest.raises(SystemExit, match=r"^mafl report: --compare: no run of method 'star'"):
        report_main([str(tmp_path), "--compare", "star", "single"])
    with pytest.raises(SystemExit, match=r"no saved eval debate of iteration 3"):
        report_main([str(tmp_path), "--compare", "debate:3", "single"])
    other = tmp_path / "seeds"
    write_run(other, "debate", 0, {0: {"a": True, "b": False}})
    write_run(other, "single", 0, {0: {"a": True, "b": True}})
    write_run(other, "debate", 1, {0: {"a": True, "z": False}})
    write_run(other, "single", 1, {0: {"a": True, "z": True}})
    with pytest.raises(ValueError, match=r"seed 1 answered other problems than seed 0"):
        compare(load_results(other), Side("debate"), Side("single"))


def test_runs_from_different_base_weights_are_not_paired_and_the_report_warns(tmp_path):
    from mafl.reporting.report import build_report

    outcomes = {0: {"a": True, "b": False}}
    mixed, same = tmp_path / "mixed", tmp_path / "same"
    write_run(mixed, "debate", 0, outcomes, weights="a" * 64)
    write_run(mixed, "single", 0, outcomes, weights="b" * 64)
    with pytest.raises(ValueError, match=r"seed 0 started from different base weights \(aaaaaaaaaaaa and bbbb"):
        compare(load_results(mixed), Side("debate"), Side("single"))
    report = build_report(load_results(mixed))
    assert ("runs of model tiny started from 2 different base weights** (another recipe, model folder or kind of "
            "CPU), so rows and seed means mix models (aaaaaaaaaaaa: debate seed 0; bbbbbbbbbbbb: single seed 0)") in report
    assert "record no base weights" not in report
    write_run(same, "debate", 0, outcomes, weights="a" * 64)
    write_run(same, "single", 0, outcomes, weights="a" * 64)
    (d,) = compare(load_results(same), Side("debate"), Side("single"))
    assert d.difference == 0 and "base weights" not in build_report(load_results(same))
    write_run(same, "star", 0, outcomes)  # an older run, without the record: no conflict, but said
    report = build_report(load_results(same))
    assert "different base weights" not in report
    assert "Note: 1 run(s) of model tiny record no base weights (older than the record)" in report


def test_a_side_keeps_a_label_with_a_colon():
    assert Side.parse("debate:0") == Side("debate", 0)
    assert Side.parse("multiagent_ft [dev split]") == Side("multiagent_ft [dev split]")
    assert Side.parse("a:b") == Side("a:b") and Side.parse("a:b:2") == Side("a:b", 2)
    assert json.dumps(str(Side("x", 1))) == '"x:1"'
