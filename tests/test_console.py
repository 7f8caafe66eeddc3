"""What a run prints: one line per finished stage, no library warnings or bars unless verbose=true, and a final
table that fits an 80-column terminal."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import pytest

from conftest import REPO
from helpers import compose_cfg
from mafl import progress
from mafl.errors import ConfigError
from mafl.metrics.stats import MetricRecord
from mafl.pipeline import run
from mafl.summary import summary_table

FAST = ["debug=smoke", "dataset.n_train=8", "dataset.n_eval=6", "debate.max_new_tokens=24", "debate.chunk_size=4",
        "metrics.diversity_problems=3"]
STAGE = re.compile(r"^✓ iteration \d: (debate \((train|eval)\) · \d+ problems|metrics \(eval\)|"
                   r"fine-tune (generator|critic)_\d \(\d+ examples\)( · \d+ steps?)?) · \d+\.\d s$")


def mafl_cli(args, tmp_path):
    """`python -m mafl ARGS` as a user runs it (Hydra's logging included), with this checkout's code."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "MAFL_HOME": str(tmp_path / "home"), "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "mafl", *args, f"hydra.run.dir={tmp_path / 'hydra'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def test_a_run_prints_one_line_per_stage_and_a_table_that_fits_80_columns(tiny_model_dir, tmp_path):
    proc = mafl_cli(FAST + [f"model.path={tiny_model_dir}", f"run_dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""  # no warnings, no logs, no progress bars of the libraries
    out = proc.stdout
    assert "\r" not in out and "\x1b" not in out  # no display is drawn when the output is not a terminal
    assert not re.search(r"Warning|Loading weights|Batches|it/s|\[INFO\]", out)
    lines = out.splitlines()
    assert lines[0].startswith("multiagent_ft on arithmetic (8 train, 6 eval problems), model ")
    stages = [s for s in lines if s.startswith("✓")]
    assert all(STAGE.match(s) for s in stages), stages
    # iteration 0: eval debate, metrics; iteration 1: train debate, 6 fine-tunes, eval debate, metrics
    assert len(stages) == 2 + 9
    assert [s for s in lines if s.startswith("iteration 1 sets: ")]  # the fine-tuning sets, before the fine-tunes
    assert [s for s in lines if re.match(r"^iteration \d+:", s)] == [s for s in lines if re.match(
        r"^iteration [01]: debate [\d.]+ ± [\d.]+ \| single agent [\d.]+ ± [\d.]+ \| consensus [\d.]+ ± [\d.]+$", s)]
    table = lines[lines.index("") + 1:]
    assert table[0] == "multiagent_ft on arithmetic (tiny), eval problems"
    assert any(s.startswith("KL(agents)") for s in table) and any(s.startswith("debate ") for s in table)
    assert max(len(s) for s in table) <= 80
    assert len(out.encode()) < 3000, len(out.encode())  # 5.6 KB, with bars and warnings, before


def test_verbose_shows_the_libraries_and_may_change_on_a_resumed_run(tiny_model_dir, tmp_path):
    args = FAST + [f"model.path={tiny_model_dir}", f"run_dir={tmp_path / 'run'}", "finetune.iterations=0"]
    proc = mafl_cli(args + ["verbose=true"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Loading weights" in proc.stderr  # transformers' own progress bar
    assert "][INFO] - " in proc.stdout  # INFO logs, through Hydra's console handler
    assert len(re.findall(r"^✓ iteration 0: debate \(eval\)", proc.stdout, re.M)) == 1  # printed once, not logged too
    run(compose_cfg(args + ["verbose=false"]))  # the same run, resumed: verbose is not part of its config


@pytest.mark.parametrize("value", [1, "yes", None])
def test_verbose_must_be_a_boolean(value, tmp_path):
    cfg = compose_cfg([f"run_dir={tmp_path}"])
    cfg.verbose = value
    with pytest.raises(ConfigError, match=r"^verbose: must be true or false"):
        run(cfg)
    assert not (tmp_path / "config.yaml").exists()


def test_a_stage_prints_its_line_and_a_nested_stage_none(capsys):
    with progress.stage("outer", total=3, unit="problem") as outer:
        with progress.stage("inner", total=2, unit="response") as inner:
            inner.update(2)
        outer.update(3)
    with progress.stage("spinner"):
        pass
    with pytest.raises(RuntimeError), progress.stage("failed", total=1):
        raise RuntimeError("boom")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert re.fullmatch(r"✓ outer · 3 problems · \d+\.\d s", out[0])
    assert re.fullmatch(r"✓ spinner · \d+\.\d s", out[1])
    assert not progress.active()


def test_an_error_inside_a_session_leaves_no_stage_open(capsys):
    with pytest.raises(KeyError), progress.console_session(verbose=False):
        progress.stage("left open", total=5).update(1)
        raise KeyError("x")
    assert not progress.active()
    assert capsys.readouterr().out == ""


def test_a_quiet_session_hides_library_warnings_and_keeps_mafls_own():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with progress.console_session(verbose=False):
            warnings.warn("a library's deprecation", FutureWarning)
            warnings.warn_explicit("a library's note", UserWarning, "lib.py", 1, module="somelib")
            warnings.warn_explicit("wandb failed", UserWarning, "tracking.py", 1, module="mafl.tracking")
        with progress.console_session(verbose=True):
            warnings.warn("shown when verbose", FutureWarning)
    assert [str(w.message) for w in seen] == ["wandb failed", "shown when verbose"]


def test_format_seconds():
    assert [progress.format_seconds(s) for s in (0.04, 59.94, 61, 3725)] == ["0.0 s", "59.9 s", "1 min 01 s",
                                                                            "1 h 02 min"]


class FakeResults:
    method, dataset, model = "multiagent_ft_no_critics", "gsm8k", "mistral"

    def __init__(self, iterations):
        self.records = []
        for k in range(iterations):
            for metric, value in [("accuracy/debate", 0.123 + k / 100), ("accuracy/agent_round1", 1.0),
                                  ("accuracy/round1_majority", 0.5), ("consensus", 0.55), ("kl/agents", 12.3456),
                                  ("embedding_dissimilarity", 0.0391)]:
                self.records.append(MetricRecord(iteration=k, split="eval", metric=metric, value=value, stderr=0.1,
                                                 n=10))


@pytest.mark.parametrize("iterations", [1, 3, 12])
def test_the_final_table_fits_80_columns_whatever_the_number_of_iterations(iterations):
    text = summary_table(FakeResults(iterations))
    lines = text.splitlines()
    assert max(len(s) for s in lines) <= 80
    heads = [s for s in lines if s.lstrip().startswith("iteration ")]
    assert sorted(int(k) for s in heads for k in re.findall(r"iteration (\d+)", s)) == list(range(iterations))
    debate = " ".join(s for s in lines if s.startswith("debate "))
    assert re.findall(r"[\d.]+ ± [\d.]+", debate) == [f"{12.3 + k:.1f} ± 10.0" for k in range(iterations)]
    kl = " ".join(s for s in lines if s.startswith("KL(agents) "))
    assert re.findall(r"[\d.]+ ± [\d.]+", kl) == ["12.346 ± 0.100"] * iterations
