"""results.json: atomic writing, loading from run and sweep folders, the fine-tuning summary."""
from __future__ import annotations

import json
import math

import pytest

from mafl.metrics import MetricRecord, Results, load_results, write_results
from mafl.rundir import atomic_write_json


def make_results(method="multiagent_ft", dataset="gsm8k", seed=0, values=(0.5, 0.6)) -> Results:
    config = {"method": {"name": method}, "dataset": {"name": dataset}, "model": {"name": "tiny"}, "seed": seed}
    records = [MetricRecord(k, "eval", "accuracy/debate", v, 0.05, 100, None, v - 0.1, v + 0.1)
               for k, v in enumerate(values)]
    return Results.from_config(config, records, {"1": {"sets": {"generator_0": 10}}})


def test_round_trip(tmp_path):
    res = make_results()
    path = write_results(tmp_path / "run", res)
    assert path == tmp_path / "run" / "results.json"
    data = json.loads(path.read_text())
    assert {"config", "method", "dataset", "model", "records", "finetune"} <= set(data)
    assert (data["method"], data["dataset"], data["model"], data["seed"]) == ("multiagent_ft", "gsm8k", "tiny", 0)
    [back] = load_results(tmp_path / "run")
    assert back.records == res.records and back.config == res.config and back.finetune == res.finetune
    assert back.path == path.resolve()
    assert [r.value for r in back.select("accuracy/debate")] == [0.5, 0.6]
    assert list(tmp_path.joinpath("run").iterdir()) == [path]  # no temp file left behind


def test_atomic_write_keeps_the_old_file_when_serialising_fails(tmp_path):
    path = atomic_write_json(tmp_path / "x.json", {"a": 1}, strict=True)
    with pytest.raises(ValueError):
        atomic_write_json(path, {"a": math.nan}, strict=True)  # NaN is not JSON
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_load_a_sweep_folder_recursively(tmp_path):
    for i, (method, dataset) in enumerate([("debate", "gsm8k"), ("multiagent_ft", "math"), ("single", "gsm8k")]):
        write_results(tmp_path / "multirun" / "2025-01-01" / f"{i}_method={method}", make_results(method, dataset))
    loaded = load_results([tmp_path / "multirun"])
    assert sorted(r.method for r in loaded) == ["debate", "multiagent_ft", "single"]
    # a results file by path, and the same file twice is read once
    one = tmp_path / "multirun" / "2025-01-01" / "0_method=debate" / "results.json"
    assert len(load_results([one, one.parent])) == 1


def test_missing_results_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no results.json under"):
        load_results(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a mafl results file"):
        load_results(tmp_path / "bad")


def test_an_atomic_folder_replaces_the_old_one_only_when_complete(tmp_path):
    from mafl.rundir import atomic_folder

    final = tmp_path / "model"
    with atomic_folder(final) as tmp:
        (tmp / "weights").write_text("1")
    assert (final / "weights").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_folder(final) as tmp:
            (tmp / "weights").write_text("2")
            raise RuntimeError("stopped half-way")
    assert (final / "weights").read_text() == "1"  # the old folder is untouched
    with atomic_folder(final) as tmp:
        (tmp / "other").write_text("3")
    assert sorted(p.name for p in final.iterdir()) == ["other"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # nothing left beside it


def test_jsonl_rows_name_their_bad_line(tmp_path):
    from mafl.rundir import iter_jsonl, read_jsonl

    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n[2]\n{"b": \n')
    with pytest.raises(ValueError, match=r"rows.jsonl:3: a row must be a JSON object"):
        read_jsonl(path)
    bad: list[str] = []
    assert list(iter_jsonl(path, bad.append)) == [(1, {"a": 1})]
    assert [b.split(": ", 1)[0] for b in bad] == [f"{path}:3", f"{path}:4"]
