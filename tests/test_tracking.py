"""Tracking never fails a run: the no-op tracker, wandb offline/disabled, and errors inside wandb."""
from __future__ import annotations

import pytest

from mafl.metrics import MetricRecord
from mafl.tracking import Tracker, WandbTracker, flatten_records, make_tracker

RECORDS = [
    MetricRecord(1, "eval", "accuracy/debate", 0.5, 0.05, 40),
    MetricRecord(1, "eval", "accuracy/agent_final", 0.4, None, 40, agent=2),
    MetricRecord(1, "eval", "kl/agents", 0.3, 0.01, 10, agent=0, other=1),
]


def test_flatten_records():
    assert flatten_records(RECORDS) == {
        "eval/accuracy/debate": 0.5, "eval/accuracy/debate_stderr": 0.05,
        "eval/accuracy/agent_final/agent2": 0.4,
        "eval/kl/agents/agent0-1": 0.3, "eval/kl/agents/agent0-1_stderr": 0.01,
    }


def test_none_is_a_no_op(tmp_path):
    tracker = make_tracker({"name": "none"}, tmp_path, {"seed": 0})
    assert type(tracker) is Tracker
    tracker.log_config({"a": 1})
    tracker.log_metrics(RECORDS, step=1)
    tracker.log_summary({"x": 1})
    tracker.finish()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="logger.name"):
        make_tracker({"name": "tensorboard"}, tmp_path)


def test_wandb_disabled(tmp_path):
    pytest.importorskip("wandb")
    tracker = make_tracker({"name": "wandb", "mode": "disabled", "project": "mafl-test"}, tmp_path, {"seed": 0})
    assert isinstance(tracker, WandbTracker) and tracker.run is not None
    tracker.log_metrics(RECORDS, step=1)
    tracker.log_metrics({"loss": 1.0}, step=2)
    tracker.log_summary({"final": 0.5})
    tracker.finish()
    assert tracker.run is None


@pytest.mark.timeout(180)
def test_wandb_offline_writes_inside_the_run_folder(tmp_path):
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    tracker = make_tracker({"name": "wandb", "mode": "offline", "project": "mafl-test"}, run_dir, {"seed": 3})
    try:
        assert tracker.run is not None
        tracker.log_config({"extra": 1})
        tracker.log_metrics(RECORDS, step=1)
        tracker.log_summary({"final": 0.5})
    finally:
        tracker.finish()
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert offline, list(run_dir.rglob("*"))
    run_id = (run_dir / "wandb_id.txt").read_text()
    assert offline[0].name.endswith(run_id)


def test_an_error_inside_wandb_init_is_a_warning(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")

    def broken_init(*args, **kwargs):
        raise RuntimeError("no service")

    monkeypatch.setattr(wandb, "init", broken_init)
    with pytest.warns(UserWarning, match="wandb failed.*no service"):
        tracker = make_tracker({"name": "wandb", "mode": "offline"}, tmp_path, {})
    assert tracker.run is None
    tracker.log_metrics(RECORDS, step=1)  # no-ops now
    tracker.log_summary({"x": 1})
    tracker.finish()


def test_an_error_while_logging_turns_tracking_off(tmp_path):
    class BrokenRun:
        finished = False

        def log(self, *a, **k):
            raise OSError("disk full")

        def finish(self, *a, **k):
            BrokenRun.finished = True

    tracker = WandbTracker.__new__(WandbTracker)
    tracker.run = BrokenRun()
    with pytest.warns(UserWarning, match="disk full"):
        tracker.log_metrics(RECORDS, step=1)
    assert tracker.run is None and BrokenRun.finished
    tracker.log_metrics(RECORDS, step=2)
    tracker.finish()
