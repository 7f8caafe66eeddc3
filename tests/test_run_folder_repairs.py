"""A run folder whose files were damaged, and runs that meet what they cannot use: fine-tuning sets and pairs cut in
half (or gone) after their stage was marked done are made again with a one-line warning each, not a traceback on
every rerun; the stage and what follows it are not redone more than that."""
from __future__ import annotations

import itertools
import json
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


SMALL_RUN = ["debug=smoke", "logger=none", "dataset.n_train=2", "dataset.n_eval=4", "debate.max_new_tokens=8",
             "finetune.iterations=0", "metrics.diversity_problems=2", "debate.chunk_size=2"]


def in_own_mounts(script: str, tmp_path) -> None:
    """Run the shell ``script`` in a mount namespace of its own (``unshare -m``), where it may mount a small or
    read-only tmpfs that no other process sees; skip where this machine does not allow it."""
    import subprocess

    probe = tmp_path / "probe"
    probe.mkdir()
    if subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=8k tmpfs {probe}"],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs in a mount namespace of its own is not allowed here (unshare -m)")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def test_a_full_disk_is_one_line_and_the_same_command_resumes(talking_model_dir, tmp_path):
    """The run folder on a 48 KiB file system: the debate's chunks fit, its transcripts do not. One line names the
    file and the cause, the chunks are kept; with room made, the same command ends the run from them."""
    import sys

    from helpers import subprocess_env

    disk, env = tmp_path / "disk", subprocess_env(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    disk.mkdir()
    command = " ".join([sys.executable, "-m", "mafl", *SMALL_RUN, f"model.path={talking_model_dir}",
                        f"run_dir={disk}/run", f"hydra.run.dir={tmp_path}/hydra"])
    exports = " ".join(f"{k}='{v}'" for k, v in env.items() if k in ("PATH", "PYTHONPATH", "HOME", "OMP_NUM_THREADS",
                                                                        "HF_HUB_OFFLINE", "MAFL_HOME"))
    in_own_mounts(f"""
        mount -t tmpfs -o size=48k tmpfs {disk}
        export {exports}
        {command} > {tmp_path}/1.out 2> {tmp_path}/1.err; echo $? > {tmp_path}/1.rc
        (cd {disk} && find run -type f | sort) > {tmp_path}/1.files
        mount -o remount,size=64m {disk}
        {command} > {tmp_path}/2.out 2> {tmp_path}/2.err; echo $? > {tmp_path}/2.rc
        cp {disk}/run/results.json {tmp_path}/results.json
        (cd {disk} && find run -type f | sort) > {tmp_path}/2.files
    """, tmp_path)
    first = (tmp_path / "1.err").read_text().strip().splitlines()
    assert (tmp_path / "1.rc").read_text().strip() == "1" and len(first) == 1, first
    assert first[0].startswith(f"mafl: {disk}/run/") and "No space left on device (errno 28)" in first[0]
    assert "free some space, and run the same command again" in first[0]
    kept = (tmp_path / "1.files").read_text().split()
    assert "run/iter_0/eval/chunks/chunk_00000.jsonl" in kept and "run/results.json" not in kept
    assert (tmp_path / "2.rc").read_text().strip() == "0", (tmp_path / "2.err").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["records"]


def test_a_read_only_model_cache_is_one_line(tmp_path):
    """MAFL_HOME (where the default model is cached) on a read-only file system: one line, naming it."""
    import sys

    from helpers import subprocess_env

    home, env = tmp_path / "home", subprocess_env(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    home.mkdir()
    exports = " ".join(f"{k}='{v}'" for k, v in env.items() if k in ("PATH", "PYTHONPATH", "HOME", "OMP_NUM_THREADS",
                                                                        "HF_HUB_OFFLINE"))
    in_own_mounts(f"""
        mount -t tmpfs -o size=1m,ro tmpfs {home}
        export {exports} MAFL_HOME={home}
        {sys.executable} -m mafl {' '.join(SMALL_RUN)} run_dir={tmp_path}/run hydra.run.dir={tmp_path}/hydra \
            > {tmp_path}/1.out 2> {tmp_path}/1.err; echo $? > {tmp_path}/1.rc
    """, tmp_path)
    lines = (tmp_path / "1.err").read_text().strip().splitlines()
    assert (tmp_path / "1.rc").read_text().strip() == "1" and len(lines) == 1, lines
    assert lines[0].startswith(f"mafl: {home}/") and "Read-only file system (errno 30)" in lines[0]
    assert "point MAFL_HOME (the model cache) or run_dir at a folder this user can write" in lines[0]


def test_a_50_mb_row_is_a_bad_row_named_in_one_line(tmp_path):
    """A valid JSONL row of 50 MB (the tokenizer aborted the process on it, a Rust backtrace and exit 134): refused
    as it is read, naming file and line; skip_bad_rows skips it."""
    from helpers import compose_cfg
    from mafl.pipeline import validate
    from mafl.tasks.loading import DatasetError

    rows = tmp_path / "eval.jsonl"
    big = (json.dumps({"question": "7" * 50_000_000, "answer": "7"}) + "\n").encode()
    rows.write_bytes(json.dumps({"question": "What is 1+1?", "answer": "2"}).encode() + b"\n" + big
                     + b"\xff\xfe not UTF-8\n")
    base = ["dataset=jsonl", f"dataset.train_file={rows}", f"dataset.eval_file={rows}", "dataset.n_train=null",
            "dataset.n_eval=null"]
    with pytest.raises(DatasetError, match=rf"^{rows}:2: a row of {len(big)} bytes, more than the 1000000 a row may "
                                           r"have$"):
        validate(compose_cfg(base)).dataset.load_problems()
    train, eval_ = validate(compose_cfg([*base, "dataset.skip_bad_rows=true"])).dataset.load_problems()
    assert [p.question for p in eval_] == ["What is 1+1?"]


def test_a_debate_on_a_jsonl_file_needs_no_train_problems(talking_model_dir, tmp_path):
    """method=debate (no fine-tuning) on a JSONL file of eval problems: no train file, no n_train demanded (was:
    "dataset.n_train=500 but only 0 problems are available")."""
    rows = tmp_path / "eval.jsonl"
    rows.write_text("".join(json.dumps({"question": f"What is {k}+{k}?", "answer": str(2 * k)}) + "\n"
                            for k in range(3)))
    run_dir = tmp_path / "run"
    results = run(compose_cfg(["method=debate", "dataset=jsonl", f"dataset.eval_file={rows}", "dataset.n_eval=3",
                               "logger=none", "debug=smoke", "debate.max_new_tokens=4", "metrics.diversity=false",
                               f"model.path={talking_model_dir}", f"run_dir={run_dir}"]))
    assert {r.iteration for r in results.records} == {0}
    assert len((run_dir / "iter_0" / "eval" / "transcripts.jsonl").read_text().splitlines()) == 3


def test_a_config_that_computed_nothing_may_be_fixed_in_the_same_folder(tmp_path):
    """A run refused before any work left its config: the fixed command in the same run_dir is accepted (a warning
    says so); once a stage has left a file, a result-defining key may not change."""
    from mafl.errors import ConfigError
    from mafl.pipeline import prepare_run_dir

    run_dir = tmp_path / "run"
    first = ["dataset=jsonl", "dataset.eval_file=/data/eval.jsonl", f"run_dir={run_dir}"]
    prepare_run_dir(compose_cfg(first), run_dir)
    prepare_run_dir(compose_cfg([*first, "dataset.n_train=0"]), run_dir)
    assert "n_train: 0" in (run_dir / "config.yaml").read_text()
    (run_dir / "iter_0" / "eval" / "chunks").mkdir(parents=True)
    (run_dir / "iter_0" / "eval" / "chunks" / "chunk_00000.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"^dataset.n_train: differs from the run already in"):
        prepare_run_dir(compose_cfg([*first, "dataset.n_train=5"]), run_dir)


def test_work_outside_the_iteration_folders_counts(tmp_path):
    """A command that keeps its work elsewhere in the folder (``mafl diagnose``'s ``debate/``) has computed something:
    another config is refused there; Hydra's records and logs beside the config are not work."""
    from mafl.errors import ConfigError
    from mafl.pipeline import prepare_run_dir

    run_dir = tmp_path / "run"
    first = ["dataset=jsonl", "dataset.eval_file=/data/eval.jsonl", f"run_dir={run_dir}"]
    prepare_run_dir(compose_cfg(first), run_dir)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("[]\n")
    (run_dir / "main.log").write_text("refused\n")
    prepare_run_dir(compose_cfg([*first, "dataset.n_train=0"]), run_dir)  # still nothing computed
    (run_dir / "debate").mkdir()
    (run_dir / "debate" / "transcripts.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"^dataset.n_train: differs from the run already in"):
        prepare_run_dir(compose_cfg([*first, "dataset.n_train=5"]), run_dir)
