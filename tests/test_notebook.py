"""notebooks/diversity.ipynb: committed without outputs, and runs headless on a small real run."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from helpers import compose_cfg

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "diversity.ipynb"

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    assert all(c.outputs == [] and c.execution_count is None for c in code), "strip the outputs before saving"
    assert "RUNS" in code[0].source and "parameters" in code[0].metadata.get("tags", [])


@pytest.fixture(scope="module")
def small_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A real two-iteration run of the random tiny model (smoke-sized, shrunk further)."""
    import mafl.pipeline

    run_dir = tmp_path_factory.mktemp("notebook_run")
    cfg = compose_cfg(["debug=smoke", f"model.path={tiny_model_dir}", f"run_dir={run_dir}",
                       "dataset.n_train=6", "dataset.n_eval=4", "debate.max_new_tokens=24"])
    mafl.pipeline.run(cfg)
    assert (run_dir / "results.json").exists()
    return run_dir


def outputs(cell, kind: str) -> list[str]:
    """The text of every output of ``cell`` with MIME type ``kind`` (``stream``: the printed text)."""
    if kind == "stream":
        return [o.text for o in cell.outputs if o.output_type == "stream"]
    return [o.data[kind] for o in cell.outputs if kind in o.get("data", {})]


def cell_with(nb, snippet: str):
    found = [c for c in nb.cells if c.cell_type == "code" and snippet in c.source]
    assert len(found) == 1, f"expected one cell containing {snippet!r}, found {len(found)}"
    return found[0]


def test_notebook_executes_on_a_run(small_run, tmp_path, monkeypatch):
    from mafl.rundir import read_jsonl

    monkeypatch.setenv("MAFL_NOTEBOOK_RUNS", str(small_run))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    # the kernel is this interpreter (the venv's), so it imports this mafl
    assert Path(outputs(nb.cells[-1], "stream")[0].strip()).resolve() == Path(sys.executable).resolve()

    # RUNS came from the environment variable
    assert str(small_run) in "".join(outputs(cell_with(nb, "MAFL_NOTEBOOK_RUNS"), "text/plain"))

    # the report tables
    report = "".join(outputs(cell_with(nb, "build_report("), "text/markdown"))
    assert "accuracy/debate" in report and "by iteration" in report

    # the society table has one column per measured iteration and a row per metric
    results = json.loads((small_run / "results.json").read_text())
    iterations = sorted({r["iteration"] for r in results["records"]})
    assert iterations == [0, 1]
    table = "".join(outputs(cell_with(nb, "society.pivot_table"), "text/plain"))
    header = next(line for line in table.splitlines() if line.startswith("iteration"))
    assert header.split()[1:] == [str(k) for k in iterations]
    for metric in ("accuracy/debate", "consensus", "embedding_dissimilarity", "kl/agents"):
        assert metric in table

    # plots: society and per-agent curves, the KL heatmaps, the embedding scatter
    images = [c for c in nb.cells if c.cell_type == "code" and outputs(c, "image/png")]
    assert len(images) >= 6
    assert outputs(cell_with(nb, "ax.scatter("), "image/png")

    # the debate dynamics: each agent's flip matrix per transition and iteration, and its plots
    dynamics = "".join(outputs(cell_with(nb, "dynamics.pivot_table"), "text/plain"))
    for column in ("right_right", "wrong_right", "right_wrong", "wrong_wrong", "kept", "adopted", "new"):
        assert column in dynamics
    assert "round1-2" in dynamics
    plots = outputs(cell_with(nb, "consensus_rounds = "), "image/png")
    assert len(plots) == 2  # the per-agent dynamics and the consensus of every round

    # the side-by-side examples: the first eval problem, every agent, round 1 and the final round
    first = read_jsonl(small_run / "iter_0" / "eval" / "transcripts.jsonl")[0]
    examples = cell_with(nb, "problem_id = EXAMPLE_PROBLEM")
    assert first["problem"]["id"] in "".join(outputs(examples, "stream"))
    html = "".join(outputs(examples, "text/html"))
    agents = len(first["rounds"][0])
    assert all(f"agent {n}" in html for n in range(agents))
    assert "round 1" in html and f"round {len(first['rounds'])} (final)" in html
    assert all(f"→ {turn['answer']}" in html for turn in first["rounds"][0])

    # the scatter embedded every agent's round-1 and final-round response of every eval problem, per iteration
    eval_files = sorted(small_run.glob("iter_*/eval/transcripts.jsonl"))
    expected = sum(min(len(read_jsonl(f)), 50) for f in eval_files) * 2 * agents
    printed = "".join(outputs(cell_with(nb, "load_embedder()"), "stream"))
    assert re.search(rf"\b{expected} responses;", printed), printed[-500:]
