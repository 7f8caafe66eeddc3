"""experiments/gpu_check.py, as far as it goes without a GPU: ``--dry-run`` builds the random Llama at a toy size,
composes and validates every run of the check on the CPU, and names what only a GPU runs."""
from __future__ import annotations

import importlib.util
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
