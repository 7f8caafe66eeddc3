"""The tasks on the real offline data (shared/data), through the Hydra dataset config groups."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mafl.tasks import get_task, load_splits
from mafl.tasks.answers import last_boxed
from mafl.tasks.math_task import presentation_free

CONF = Path(__file__).resolve().parents[1] / "mafl" / "conf"


def dataset_cfg(data_dir, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"dataset.data_dir={data_dir}", *overrides])
    return cfg.dataset


def rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_gsm8k_splits(shared_data):
    train, eval_ = load_splits(dataset_cfg(shared_data, "dataset=gsm8k"))
    assert len(train) == len(eval_) == 500
    assert not {p.question for p in train} & {p.question for p in eval_}
    test_rows = rows(shared_data / "gsm8k" / "test.jsonl")
    for p in eval_:
        kind, split, index = p.id.split("/")
        assert (kind, split) == ("gsm8k", "test")
        row = test_rows[int(index)]
        assert p.question == row["question"]
        assert p.answer == row["answer"].rsplit("####", 1)[1].strip().replace(",", "")


def test_math_splits_follow_levels_and_subjects(shared_data):
    train, eval_ = load_splits(dataset_cfg(shared_data, "dataset=math"))
    assert len(train) == len(eval_) == 500
    assert {p.meta["level"] for p in train + eval_} <= {1, 2, 3}
    assert all(p.id.startswith("test/") for p in eval_) and all(p.id.startswith("train/") for p in train)
    _, algebra = load_splits(dataset_cfg(shared_data, "dataset=math", "dataset.subjects=[Algebra]",
                                         "dataset.levels=[5]", "dataset.n_eval=null", "dataset.n_train=null"))
    assert len(algebra) > 100 and {(p.meta["subject"], p.meta["level"]) for p in algebra} == {("Algebra", 5)}


def test_math_every_level_keeps_the_unknown_level_rows(shared_data, caplog):
    cfg = dataset_cfg(shared_data, "dataset=math", "dataset.levels=null", "dataset.n_train=null",
                      "dataset.n_eval=null", "dataset.skip_bad_rows=true")
    with caplog.at_level(logging.WARNING, logger="mafl.tasks.loading"):
        train, eval_ = load_splits(cfg)
    assert len(eval_) == 5000
    # 7,500 rows - 2 without a boxed answer (\boxed{}) - those whose question is also an eval question
    assert 7490 <= len(train) <= 7498
    assert sum(p.meta["level"] is None for p in train) == 2  # the two "Level ?" rows
    assert "skipped 2 malformed rows" in caplog.text and "train.jsonl:5530" in caplog.text


def test_math500_splits(shared_data):
    train, eval_ = load_splits(dataset_cfg(shared_data, "dataset=math500", "dataset.skip_bad_rows=true"))
    assert len(eval_) == 500 and len(train) == 500
    math500 = {r["unique_id"]: r for r in rows(shared_data / "math" / "math500_test.jsonl")}
    assert {p.id for p in eval_} == set(math500)
    assert all(p.answer == math500[p.id]["answer"] for p in eval_)
    assert not {p.id for p in train} & set(math500)


def test_every_gsm8k_gold_answer_grades_as_correct(shared_data):
    task = get_task("gsm8k")
    failures = []
    for split in ("test", "train"):
        for i, row in enumerate(rows(shared_data / "gsm8k" / f"{split}.jsonl")):
            gold = task.gold_answer(row)
            from_solution = task.extract_answer(row["answer"])  # the reference solution read as a response
            if not (task.is_equivalent(gold, gold) and task.is_equivalent(from_solution, gold)):
                failures.append((split, i, gold, from_solution))
    assert failures == []


def test_every_math500_answer_grades_as_correct(shared_data):
    """MATH500's ``answer`` field against its solution's last box, and each answer against itself through
    math-verify (no shortcut), so every gold answer is one the grader can parse."""
    task = get_task("math")
    data = rows(shared_data / "math" / "math500_test.jsonl")
    pairs = []
    for row in data:
        gold = task.gold_answer(row)
        pairs += [(gold, gold), (last_boxed(row["solution"]), gold), (task.extract_answer(row["solution"]), gold)]
    verdicts = task.equivalent_many(pairs)
    assert [pairs[i] for i, ok in enumerate(verdicts) if not ok] == []
    symbolic = task.sandbox.check_many([(presentation_free(r["answer"]),) * 2 for r in data])
    assert [r["answer"] for r, ok in zip(data, symbolic) if not ok] == []


@pytest.mark.slow
def test_every_math_test_answer_parses_in_math_verify(shared_data):
    task = get_task("math")
    golds = [presentation_free(task.gold_answer(r)) for r in rows(shared_data / "math" / "test.jsonl")]
    verdicts = task.sandbox.check_many([(g, g) for g in golds])
    assert [g for g, ok in zip(golds, verdicts) if not ok] == []
