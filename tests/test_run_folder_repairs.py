"""A run folder whose files were damaged, and runs that meet what they cannot use: fine-tuning sets and pairs cut in
half (or gone) after their stage was marked done are made again with a one-line warning each, not a traceback on
every rerun; the stage and what follows it are not redone more than that."""
from __future__ import annotations

import itertools
import logging

import pytest

from helpers import ScriptedBackend, compose_cfg
from mafl.pipeline import run
from test_methods import FakeFinetune, gold


CALLS = itertools.count()


def right_or_wrong(request) -> str:
    """Right for two requests in three, otherwise wrong: agents disagree, so sets and pairs both have rows."""
    text = next((m["content"] for m in request.messages if "What is the result of" in m["content"]), None)
    if text is None:  # a summary of the others' answers
        return "The agents gave their answers."
    text = text[text.index("What is the result of"):]
    return f"Thinking. The answer is {gold(text) if next(CALLS) % 3 else 99999}."


@pytest.fixture()
def scripted(tmp_path, monkeypatch):
    import mafl.backends
    import mafl.finetune.finetune_one

    backend, fake = ScriptedBackend(right_or_wrong), FakeFinetune()
    monkeypatch.setattr(mafl.backends, "backend_class", lambda name: (lambda *a, **k: backend))
    monkeypatch.setattr(mafl.finetune.finetune_one, "finetune_job", fake)
    return backend, fake


def test_sets_and_pairs_cut_in_half_are_made_again_with_one_line_each(scripted, tmp_path, caplog):
    backend, fake = scripted
    run_dir = tmp_path / "run"
    cfg = compose_cfg(["logger=none", f"model.path={tmp_path}", "metrics.diversity=false", "dataset.n_train=6",
                       "dataset.n_eval=4", "finetune.iterations=1", "finetune.objective=sft+dpo",
                       f"run_dir={run_dir}"])
    first = run(cfg)
    sets_dir = run_dir / "iter_1" / "sets"
    files = {p: p.read_bytes() for p in sorted(sets_dir.glob("*.jsonl")) if p.stat().st_size > 0}
    pairs = [p for p in files if p.name.endswith(".pairs.jsonl")]
    examples = [p for p in files if not p.name.endswith(".pairs.jsonl")]
    assert pairs and len(examples) >= 2
    trained = len(fake.calls)
    damages = [(examples[0], "half"), (pairs[0], "half"), (examples[1], "gone"), (pairs[-1], "ten bytes")]
    for path, damage in damages:
        if damage == "gone":
            path.unlink()
        else:
            path.write_bytes(files[path][: len(files[path]) // 2 if damage == "half" else 10])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mafl"):
            again = run(cfg)  # was: a traceback on every rerun, until the stage marker was deleted by hand
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warned) == 1 and warned[0].startswith(f"{path} "), (path, warned)
        assert ("is missing" if damage == "gone" else "does not parse") in warned[0]
        assert len(warned[0].splitlines()) == 1
        assert {p: p.read_bytes() for p in files} == files  # made again: the same sets as before
        assert len(fake.calls) == trained  # the models, already trained, are not trained again
        assert again.to_json()["records"] == first.to_json()["records"]


def test_long_overrides_get_a_bounded_and_unique_run_folder(tmp_path):
    """Hydra names the run folder after the overrides: past 255 bytes the file system refused it ("File name too
    long", a traceback). Now the name is cut and the overrides' hash added: two long command lines that differ
    only past the cut get two folders."""
    import subprocess
    import sys

    from helpers import subprocess_env

    long_path = "/nonexistent/" + "d" * 150
    outs = []
    for last in ("a", "b"):
        outs.append(subprocess.run(
            [sys.executable, "-m", "mafl", "logger=none", f"dataset.data_dir={long_path}", "dataset=jsonl",
             f"dataset.train_file=train_{'x' * 60}.jsonl", f"dataset.eval_file=eval_{'y' * 60}_{last}.jsonl"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300, env=subprocess_env(OMP_NUM_THREADS="1")))
    for out in outs:  # the config is refused (no such data file), after Hydra made the run folder
        assert out.returncode == 2 and "File name too long" not in out.stderr, out.stderr
        assert out.stderr.strip().startswith("mafl: bad config: dataset.") and len(out.stderr.strip().splitlines()) == 1
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(folders) == 2 and all(len(f.encode()) <= 160 for f in folders)
    assert folders[0][:-13] == folders[1][:-13] and folders[0] != folders[1]  # cut alike, told apart by the hash
