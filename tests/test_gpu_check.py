"""experiments/gpu_check.py, as far as it goes without a GPU: ``--dry-run`` builds the random Llama at a toy size,
composes and validates every run of the check on the CPU, and names what only a GPU runs."""
from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dry_run_validates_every_run_of_the_check(tmp_path, capsys):
    gpu_check = load_script()
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path), "--problems", "8"]) == 0
    out = capsys.readouterr().out
    names = [name for name, _, _ in gpu_check.runs(tmp_path, 8, gpus=1)]
    assert names == ["tiny_lora", "llama1b_lora", "llama1b_full", "llama1b_accelerate", "llama1b_vllm"]
    for name, _, skipped in gpu_check.runs(tmp_path, 8, gpus=0):
        assert (f"{name}: skipped: " if skipped else f"{name}: valid: mafl ") in out
    assert "cuda-only steps:" in out and (tmp_path / "random_llama_toy" / "config.json").is_file()


def test_the_check_asks_for_bfloat16_a_lora_a_full_fine_tune_and_every_gpu():
    gpu_check = load_script()
    plan = {name: overrides for name, overrides, _ in gpu_check.runs(Path("m"), 8, gpus=4)}
    assert all("model.dtype=bfloat16" in o for o in plan.values())
    assert "finetune=full" in plan["llama1b_full"] and "finetune=lora_gpu" in plan["llama1b_lora"]
    assert "finetune.accelerate={distributed_type:MULTI_GPU,num_processes:4}" in plan["llama1b_accelerate"]
    assert "backend=vllm" in plan["llama1b_vllm"]
    # about 1B parameters: 22 Llama layers of width 2048 (embeddings aside)
    s = gpu_check.BILLION
    per_layer = 4 * s["hidden_size"] ** 2 * (1 + s["num_key_value_heads"] / s["num_attention_heads"]) / 2 \
        + 3 * s["hidden_size"] * s["intermediate_size"]
    assert 0.9e9 < s["num_hidden_layers"] * per_layer < 1.2e9


WHEELS = Path(__file__).resolve().parents[1] / "experiments" / "gpu_check_wheels.txt"
BASE = ["torch", "transformers", "peft", "accelerate"]  # what a bare machine has (experiments/gpu_check.sh)
# what mafl imports on the check's path beyond those: hydra (composing a config), trl and datasets (fine-tuning)
ON_THE_PATH = ["hydra-core", "trl", "datasets"]


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_rows() -> dict[str, list[str]]:
    """{distribution: [name==version, module, (binary)]} of experiments/gpu_check_wheels.txt."""
    rows = [line.split() for line in WHEELS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {normalized(r[0].split("==")[0]): r for r in rows}


def requirement_closure(names) -> set[str]:
    """The installed distributions ``names`` need, themselves included (extras and other platforms' markers aside)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen, todo = set(), [normalized(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(normalized(req.name))
    return seen


def test_the_wheelhouse_holds_what_the_path_needs_beyond_the_four_and_nothing_else():
    rows = wheel_rows()
    assert set(rows) == requirement_closure(ON_THE_PATH) - requirement_closure(BASE)
    from importlib import metadata

    lock = dict(line.split("==") for line in (WHEELS.parents[1] / "requirements.lock").read_text().split()
                if "==" in line)
    providers = metadata.packages_distributions()
    for dist, (pin, module, *kind) in rows.items():
        assert dist in {normalized(d) for d in providers[module]}, f"{module} is not from {dist}"
        version = pin.split("==")[1]
        if version != lock[pin.split("==")[0]]:  # pyarrow: datasets' lowest, a smaller wheel than the lock's
            from packaging.requirements import Requirement

            wanted = [Requirement(r) for r in metadata.requires("datasets") if normalized(Requirement(r).name) == dist]
            assert wanted and version in wanted[0].specifier, f"{pin} is neither the lock's nor what datasets allows"


def test_mafls_module_level_imports_come_with_the_four_or_the_wheelhouse():
    """What any mafl module imports when it is imported (not inside a function) is on a bare machine with the
    wheelhouse installed; but mafl serve's app (fastapi: the serve extra), which only `mafl serve` imports."""
    from importlib import metadata

    providers = metadata.packages_distributions()
    available = requirement_closure(BASE) | set(wheel_rows())
    package = Path(__file__).resolve().parents[1] / "mafl"
    for path in package.rglob("*.py"):
        if path == package / "serve" / "app.py":
            continue
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"mafl", "__future__"}:
                dists = {normalized(d) for d in providers.get(top, [])}
                where = path.relative_to(package.parent)
                assert dists & available, f"{where} imports {top} ({dists or 'not installed'})"


def test_the_cpu_check_runs_the_tiny_model_only_where_it_is_cached(tmp_path, monkeypatch):
    gpu_check = load_script()
    monkeypatch.setenv("MAFL_HOME", str(tmp_path / "empty_home"))
    plan = gpu_check.cpu_runs(tmp_path / "toy", 4)
    assert [name for name, _, _ in plan] == ["tiny_lora", "tiny_full", "tiny_accelerate", "toy_llama_lora"]
    for name, overrides, skipped in plan:
        assert "dataset.n_eval=4" in overrides and "model.dtype=float32" in overrides
        assert (skipped is None) == (name == "toy_llama_lora")
        if skipped:
            assert str(tmp_path / "empty_home" / "tiny") in skipped
