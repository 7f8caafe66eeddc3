"""load_splits: local JSONL files, sampling, disjointness, and the errors for malformed rows and missing files."""
from __future__ import annotations

import json
import logging

import pytest
from omegaconf import OmegaConf

from mafl.tasks import DatasetError, load_splits


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def qa_rows(n, start=0):
    return [{"question": f"What is {i} plus one?", "answer": i + 1} for i in range(start, start + n)]


def jsonl_cfg(tmp_path, **over):
    cfg = {"name": "toy", "task": "jsonl", "data_dir": str(tmp_path), "train_file": "train.jsonl",
           "eval_file": "eval.jsonl", "question_field": "question", "answer_field": "answer",
           "answer_type": "integer", "n_train": None, "n_eval": None, "eval_seed": 0, "train_seed": 0,
           "skip_bad_rows": False}
    cfg.update(over)
    return cfg


def test_loads_local_files_with_stable_ids(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", qa_rows(30))
    write_jsonl(tmp_path / "eval.jsonl", qa_rows(10, start=100))
    train, eval_ = load_splits(jsonl_cfg(tmp_path))
    assert len(train) == 30 and len(eval_) == 10
    assert eval_[3].id == "toy/eval/3" and eval_[3].question == "What is 103 plus one?" and eval_[3].answer == "104"
    assert train[0].id == "toy/train/0"


def test_sampling_is_seeded_and_nested(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", qa_rows(50))
    write_jsonl(tmp_path / "eval.jsonl", qa_rows(50, start=100))
    a = load_splits(jsonl_cfg(tmp_path, n_train=10, n_eval=20))
    assert a == load_splits(jsonl_cfg(tmp_path, n_train=10, n_eval=20))
    assert a != load_splits(jsonl_cfg(tmp_path, n_train=10, n_eval=20, eval_seed=1))
    assert a[1] == load_splits(jsonl_cfg(tmp_path, n_train=10, n_eval=20, train_seed=1))[1]
    assert a[0] != load_splits(jsonl_cfg(tmp_path, n_train=10, n_eval=20, train_seed=1))[0]
    small = load_splits(jsonl_cfg(tmp_path, n_train=5, n_eval=8))
    assert {p.id for p in small[1]} <= {p.id for p in a[1]}  # a smaller sample is inside the larger one
    assert [p.id for p in a[1]] == sorted((p.id for p in a[1]), key=lambda i: int(i.split("/")[-1]))  # file order
    with pytest.raises(DatasetError, match="n_eval=51 but only 50"):
        load_splits(jsonl_cfg(tmp_path, n_eval=51))


def test_one_file_for_both_splits_gives_disjoint_splits(tmp_path):
    write_jsonl(tmp_path / "all.jsonl", qa_rows(40))
    train, eval_ = load_splits(jsonl_cfg(tmp_path, train_file="all.jsonl", eval_file="all.jsonl", n_eval=15))
    assert len(eval_) == 15 and len(train) == 25
    assert not {p.question for p in train} & {p.question for p in eval_}


def test_a_train_row_repeating_an_eval_question_is_left_out(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", qa_rows(5) + [{"question": "What is  100 plus one?", "answer": 101}])
    write_jsonl(tmp_path / "eval.jsonl", qa_rows(3, start=100))
    train, _ = load_splits(jsonl_cfg(tmp_path))
    assert len(train) == 5


@pytest.mark.parametrize("bad_line, message", [
    ('{"question": "q", "answer": ', r"eval\.jsonl:3: invalid JSON"),
    ('["a list"]', r"eval\.jsonl:3: a row must be a JSON object"),
    ('{"answer": 5}', r"eval\.jsonl:3: field 'question': missing"),
    ('{"question": "q"}', r"eval\.jsonl:3: field 'answer': missing"),
    ('{"question": "q", "answer": ""}', r"eval\.jsonl:3: field 'answer': empty"),
    ('{"question": "  ", "answer": 3}', r"eval\.jsonl:3: field 'question': empty"),
    ('{"question": "q", "answer": "many"}', r"eval\.jsonl:3: field 'answer': not a number"),
])
def test_a_malformed_row_stops_loading_with_file_line_and_field(tmp_path, bad_line, message):
    write_jsonl(tmp_path / "train.jsonl", qa_rows(3))
    write_jsonl(tmp_path / "eval.jsonl", qa_rows(2, start=10) + [bad_line] + qa_rows(2, start=20))
    with pytest.raises(DatasetError, match=message):
        load_splits(jsonl_cfg(tmp_path))


def test_skip_bad_rows_counts_and_reports_them(tmp_path, caplog):
    write_jsonl(tmp_path / "train.jsonl", qa_rows(3))
    write_jsonl(tmp_path / "eval.jsonl", qa_rows(2) + ["not json", '{"question": "q"}', ""] + qa_rows(2, start=9))
    with caplog.at_level(logging.WARNING, logger="mafl.tasks.loading"):
        _, eval_ = load_splits(jsonl_cfg(tmp_path, skip_bad_rows=True))
    assert len(eval_) == 4
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 2 malformed rows" in warning and "eval.jsonl:3" in warning and "eval.jsonl:4" in warning


def test_a_missing_file_names_the_path_and_the_config_key(tmp_path):
    write_jsonl(tmp_path / "eval.jsonl", qa_rows(3))
    with pytest.raises(DatasetError, match=r"nope\.jsonl does not exist .*dataset\.train_file='nope\.jsonl'"):
        load_splits(jsonl_cfg(tmp_path, train_file="nope.jsonl"))
    with pytest.raises(DatasetError, match=r"dataset\.eval_file is not set"):
        load_splits(jsonl_cfg(tmp_path, eval_file="???"))
    with pytest.raises(DatasetError, match=r"dataset\.eval_file is not set"):
        load_splits(jsonl_cfg(tmp_path, eval_file=None))
    with pytest.raises(DatasetError, match=r"dataset\.train_file is not set"):
        load_splits(jsonl_cfg(tmp_path, train_file="???"))


def test_files_without_data_dir_are_paths(tmp_path):
    write_jsonl(tmp_path / "e.jsonl", [{"q": "Capital of France?", "a": "Paris"}])
    cfg = jsonl_cfg(tmp_path, data_dir=None, train_file=None, eval_file=str(tmp_path / "e.jsonl"),
                    question_field="q", answer_field="a", answer_type="text")
    train, eval_ = load_splits(OmegaConf.create(cfg))  # a DictConfig works as well as a dict
    assert train == [] and eval_[0].answer == "Paris" and eval_[0].id == "toy/e/0"


def test_math_rows_are_filtered_by_level_and_subject(tmp_path):
    rows = [
        {"problem": "p1", "solution": r"\boxed{1}", "level": "Level 1", "type": "Algebra",
         "unique_id": "test/a/1.json"},
        {"problem": "p2", "solution": r"\boxed{2}", "level": "Level 4", "type": "Algebra",
         "unique_id": "test/a/2.json"},
        {"problem": "p3", "solution": r"\boxed{3}", "level": "Level 2", "type": "Counting & Probability"},
        {"problem": "p4", "solution": "no box", "level": "Level ?", "type": "Geometry"},  # never selected below
    ]
    write_jsonl(tmp_path / "eval.jsonl", rows)
    cfg = {"name": "math", "task": "math", "data_dir": str(tmp_path), "train_file": None, "eval_file": "eval.jsonl",
           "n_train": None, "n_eval": None, "seed": 0, "levels": [1, 2, 3], "subjects": None}
    _, eval_ = load_splits(cfg)
    assert [p.id for p in eval_] == ["test/a/1.json", "math/eval/2"]  # unique_id when the row has one
    assert [p.meta["level"] for p in eval_] == [1, 2]
    _, eval_ = load_splits({**cfg, "levels": None, "subjects": ["counting_and_probability"]})
    assert [p.answer for p in eval_] == ["3"]
    with pytest.raises(DatasetError, match=r"eval\.jsonl:4: field 'solution': no \\boxed"):
        load_splits({**cfg, "levels": None})


def test_arithmetic_config(tmp_path):
    train, eval_ = load_splits({"task": "arithmetic", "n_train": 12, "n_eval": 7, "seed": 5, "low": 0, "high": 29})
    assert len(train) == 12 and len(eval_) == 7
    with pytest.raises(ValueError, match="n_eval"):
        load_splits({"task": "arithmetic", "n_train": 12, "n_eval": None, "seed": 5})


def test_hub_rows_when_there_is_no_data_dir(monkeypatch):
    """The hub path, with a stand-in for `datasets` (tests never reach the network)."""
    import sys
    import types

    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return [{"question": f"{name} {split} q{i}", "answer": f"work\n#### {i},000"} for i in range(3)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    cfg = {"name": "gsm8k", "task": "gsm8k", "data_dir": None, "train_file": "gsm8k/train.jsonl",
           "eval_file": "gsm8k/test.jsonl", "n_train": None, "n_eval": 2, "seed": 0,
           "hub": {"path": "openai/gsm8k", "name": ["a", "b"], "train_split": "train", "eval_split": "test"}}
    train, eval_ = load_splits(cfg)
    assert calls == [("openai/gsm8k", "a", "test"), ("openai/gsm8k", "b", "test"),
                     ("openai/gsm8k", "a", "train"), ("openai/gsm8k", "b", "train")]
    assert len(eval_) == 2 and len(train) == 6 and train[4].id == "gsm8k/train/4" and train[4].answer == "1000"
    _, eval_ = load_splits({**cfg, "hub": {**cfg["hub"], "train_split": None}, "n_eval": None})
    assert len(eval_) == 6


def test_the_jsonl_config_group(tmp_path):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from mafl.tasks import task_from_config

    write_jsonl(tmp_path / "t.jsonl", [{"prompt": f"Capital number {i}?", "label": f"\\frac{{{i}}}{{2}}"}
                                       for i in range(1, 9)])
    conf = Path(__file__).resolve().parents[1] / "mafl" / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "dataset=jsonl", f"dataset.train_file={tmp_path / 't.jsonl'}", f"dataset.eval_file={tmp_path / 't.jsonl'}",
            "dataset.question_field=prompt", "dataset.answer_field=label", "dataset.answer_type=math",
            "dataset.n_eval=3", "dataset.n_train=null"])
    train, eval_ = load_splits(cfg.dataset)
    assert len(eval_) == 3 and len(train) == 5
    task = task_from_config(cfg.dataset)
    assert task.is_equivalent("0.5", task.gold_answer({"prompt": "q", "label": r"\frac{1}{2}"}))
    assert eval_[0].id.startswith("jsonl/t/")




def test_a_task_outside_the_registry_is_one_module_named_by_the_config(tmp_path, monkeypatch):
    from helpers import COUNTING_TASK, compose_cfg
    from mafl.pipeline import validate
    from mafl.errors import ConfigError
    from mafl.tasks import TASKS

    (tmp_path / "counting_task.py").write_text(COUNTING_TASK)
    monkeypatch.syspath_prepend(str(tmp_path))
    train, eval_ = load_splits({"task": "counting_task:CountingTask", "n_train": 2, "n_eval": 3})
    assert [p.answer for p in eval_] == ["1", "2", "3"] and [p.answer for p in train] == ["4", "5"]
    with pytest.raises(ConfigError, match=r"^dataset.high: unknown key"):  # an arithmetic key it does not read
        validate(compose_cfg(["dataset.task=counting_task:CountingTask"]))
    settings = validate(compose_cfg(["dataset.task=counting_task:CountingTask", "~dataset.low", "~dataset.high"]))
    assert settings.dataset.task.name == "counting" and "counting_task:CountingTask" not in TASKS
    with pytest.raises(ConfigError, match=r"^dataset.task: cannot import counting_task:Nope"):
        validate(compose_cfg(["dataset.task=counting_task:Nope"]))
    with pytest.raises(ConfigError, match=r"^dataset.task: 'counting' is not one of arithmetic, gsm8k, math, jsonl$"):
        validate(compose_cfg(["dataset.task=counting"]))


def test_a_dev_split_comes_from_the_train_pool_and_is_disjoint_from_both(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", qa_rows(60))
    write_jsonl(tmp_path / "eval.jsonl", qa_rows(20, start=100))
    train, eval_ = load_splits(jsonl_cfg(tmp_path, n_train=30, n_eval=10))
    dev_train, dev = load_splits(jsonl_cfg(tmp_path, n_train=30, n_eval=10, split="dev"))
    assert len(dev) == 10 and all(p.id.startswith("toy/train/") for p in dev)  # never a row of the eval file
    assert not {p.id for p in dev} & {p.id for p in dev_train}
    assert not {p.question for p in dev} & {p.question for p in eval_}
