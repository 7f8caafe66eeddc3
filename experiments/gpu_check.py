"""The whole loop on CUDA, in one prepared check (driven by experiments/gpu_check.sh): the embedded tiny model and a
randomly initialised Llama of about 1B parameters built from a config (no weights downloaded), the hf backend in
bfloat16, a LoRA and a full fine-tune, accelerate with the GPUs present, vLLM where it is installed. Prints, per
run, the debate's generated tokens/s, the peak GPU memory of every stage, and the debate's share of the raw
forward throughput of the same model on the same shapes.

    python experiments/gpu_check.py [--out DIR] [--problems 32] [--dry-run | --cpu]

``--dry-run`` (no GPU needed): builds the random Llama at a toy size on the CPU, composes and validates every run's
config (on device=cpu), and prints the plan; nothing is generated or trained. The cuda-only steps are named.

``--cpu`` (no GPU needed; minutes): the loop for real on the CPU at a small size (4 problems, 1 iteration,
float32): the embedded tiny model with a LoRA, a full and an accelerate-launched fine-tune (its default recipe,
only where $MAFL_HOME already holds it: pretraining it takes about 40 minutes), and the toy random Llama with a
LoRA (random weights: its debates agree on nothing, so it has no examples to train on).
Prints each run's seconds, debate tokens/s, fine-tuning examples and steps per model, and eval accuracy.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# about 1.1B parameters (Llama shapes: 22 layers of width 2048, as TinyLlama-1.1B)
BILLION = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4)
TOY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)


def build_random_llama(path: Path, shape: dict) -> Path:
    """A Llama of ``shape`` with random weights and the embedded model's tokenizer recipe (trained on a few of its
    prompts), saved with ``save_pretrained``: what a hub checkpoint of that size is to mafl, without a download."""
    if (path / "config.json").is_file():
        return path
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mafl.tiny.corpus import load_prompts
    from mafl.tiny.tokenizer import build_tokenizer

    prompts = load_prompts()
    corpus = [t.format(question="What is the result of 3+4*5+6-7*8?", others="Agent 1: 12.", agent=1, response="12",
                       summary="12") for t in prompts.values()] * 20
    tok = build_tokenizer(corpus, vocab_size=512)
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, tie_word_embeddings=False,
                      **shape)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def small(problems: int) -> list[str]:
    """What every run of the check shares: ``problems`` train and eval problems, one iteration, short debates."""
    return [f"dataset.n_train={problems}", f"dataset.n_eval={problems}", "finetune.iterations=1", "logger=none",
            "debate.max_new_tokens=96", "debate.summary_max_new_tokens=64", "metrics.diversity=false"]


def accelerate_override(gpus: int) -> str:
    return f"finetune.accelerate={{distributed_type:{'MULTI_GPU' if gpus > 1 else 'NO'},num_processes:{max(gpus, 1)}}}"


def runs(model_dir: Path, problems: int, gpus: int) -> list[tuple[str, list[str], str | None]]:
    """(name, overrides, why it is skipped or None) of every run of the check."""
    llama = [f"model.path={model_dir}", "model.name=random_llama_1b", "model.dtype=bfloat16", *small(problems)]
    vllm = None if importlib.util.find_spec("vllm") else "vllm is not installed (pip install 'mafl[vllm]')"
    return [
        ("tiny_lora", ["model.tiny.steps=300", "model.dtype=bfloat16", *small(problems)], None),
        ("llama1b_lora", [*llama, "finetune=lora_gpu"], None),
        ("llama1b_full", [*llama, "finetune=full", "finetune.train.per_device_train_batch_size=2"], None),
        ("llama1b_accelerate", [*llama, "finetune=lora_gpu", accelerate_override(gpus)], None),
        ("llama1b_vllm", [*llama, "finetune=lora_gpu", "backend=vllm", "backend.gpu_memory_utilization=0.5"], vllm),
    ]


def cpu_runs(model_dir: Path, problems: int) -> list[tuple[str, list[str], str | None]]:
    """(name, overrides, why it is skipped or None) of every run of ``--cpu``: the GPU check's runs on the CPU at a
    small size, the embedded tiny model at its default recipe (cached, or skipped) and the toy random Llama."""
    from mafl.tiny import tiny_model_dir

    tiny = ["model.dtype=float32", *small(problems)]
    cached = tiny_model_dir(compose(tiny).model.tiny)
    uncached = None if cached.is_dir() else f"the tiny model is not in {cached} (mafl build-tiny: about 40 min)"
    return [
        ("tiny_lora", tiny, uncached),
        ("tiny_full", [*tiny, "finetune=full"], uncached),
        ("tiny_accelerate", [*tiny, accelerate_override(0)], uncached),
        ("toy_llama_lora", [f"model.path={model_dir}", "model.name=random_llama_toy", "model.dtype=float32",
                            *small(problems)], None),
    ]


def cpu_summary(results: dict) -> dict:
    """What a ``--cpu`` run shows of the loop, from its results.json: every model's fine-tuning examples and
    optimizer steps (iteration 1) and the debate's eval accuracy before and after."""
    def accuracy(iteration):
        return next((r["value"] for r in results["records"] if r["metric"] == "accuracy/debate"
                     and r["iteration"] == iteration and r["split"] == "eval" and r.get("agent") is None), None)

    models = results["finetune"]["1"]["models"]
    return {"examples": {m: r.get("num_examples") for m, r in models.items()},
            "steps": {m: r.get("global_step") for m, r in models.items()},
            "accuracy_debate": [accuracy(0), accuracy(1)]}


def run_check(name: str, overrides: list[str], device: str, out: Path) -> dict:
    """Run ``overrides`` on ``device`` into ``out/name``; its results.json."""
    from mafl.metrics.results import RESULTS_FILE
    from mafl.pipeline import run

    run(compose([*overrides, f"device={device}", f"run_dir={out / name}"]))
    return json.loads((out / name / RESULTS_FILE).read_text())


def compose(overrides: list[str]):
    """The config ``mafl <overrides>`` runs (mafl's own config tree)."""
    from mafl.diagnose.command import compose_config

    return compose_config(overrides)


@contextlib.contextmanager
def peak_memory_per_stage(peaks: dict):
    """Every timed stage of a run (:meth:`mafl.run_folder.RunFolder.timed`) also records the peak GPU memory it
    reached in this process (GiB); fine-tunes launched as other processes (accelerate) are not seen here."""
    import torch

    from mafl.run_folder import RunFolder

    timed = RunFolder.timed

    @contextlib.contextmanager
    def measured(self, k, stage):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with timed(self, k, stage):
            yield
        torch.cuda.synchronize()
        key = f"iter_{k}/{stage}"
        peaks[key] = max(peaks.get(key, 0.0), torch.cuda.max_memory_allocated() / 2**30)

    RunFolder.timed = measured
    try:
        yield
    finally:
        RunFolder.timed = timed


def debate_rate(results: dict) -> tuple[float, int, float]:
    """(generated tokens/s of the untuned eval debate, tokens, seconds) from a run's results.json."""
    tokens = next(r for r in results["records"] if r["metric"] == "tokens/total" and r["iteration"] == 0
                  and r["split"] == "eval" and r.get("agent") is None)
    n = int(results["config"]["dataset"]["n_eval"])
    seconds = float(results["timings"]["0"]["eval_debate"])
    return tokens["value"] * n / seconds, int(tokens["value"] * n), seconds


def raw_forward_rate(model_dir: str, batch: int, prompt: int, new: int) -> float:
    """Tokens/s of bare forward passes of the model on the debate's shapes: a prefill of ``batch`` prompts of
    ``prompt`` tokens, then ``new`` KV-cached greedy steps (no sampling, no stopping)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    ids = torch.randint(10, model.config.vocab_size, (batch, prompt), device="cuda")
    with torch.inference_mode():
        model(ids[:, :8])  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(ids, use_cache=True)
        past, step = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for _ in range(new - 1):
            out = model(step, past_key_values=past, use_cache=True)
            past, step = out.past_key_values, out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
    del model
    torch.cuda.empty_cache()
    return batch * new / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu_check", help="where the runs and the model are made")
    ap.add_argument("--problems", type=int, default=None, help="train and eval problems of every run (32; --cpu: 4)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="compose and validate every run on the CPU; run nothing")
    mode.add_argument("--cpu", action="store_true", help="run the loop on the CPU at a small size (minutes)")
    args = ap.parse_args(argv)
    args.problems = args.problems or (4 if args.cpu else 32)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from mafl.pipeline import validate

    if args.dry_run:
        model_dir = build_random_llama(out / "random_llama_toy", TOY)
        print(f"dry run: a toy-sized random Llama in {model_dir} stands in for the 1B one (cuda-only steps: "
              "generation, fine-tuning, accelerate launch, vLLM, the memory and throughput measurements)")
        for name, overrides, skipped in runs(model_dir, args.problems, gpus=0):
            if skipped:
                print(f"{name}: skipped: {skipped}")
                continue
            validate(compose([*overrides, "device=cpu", f"run_dir={out / name}"]))
            print(f"{name}: valid: mafl {' '.join(overrides)} device=cuda")
        return 0
    if args.cpu:
        return cpu_check(out, args.problems)

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no GPU is visible (torch.cuda.is_available() is False); run it with --dry-run here")
        return 2
    gpus = torch.cuda.device_count()
    print(f"{gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    model_dir = build_random_llama(out / "random_llama_1b", BILLION)
    report = {}
    for name, overrides, skipped in runs(model_dir, args.problems, gpus):
        if skipped:
            print(f"{name}: skipped: {skipped}")
            continue
        peaks: dict = {}
        start = time.perf_counter()
        with peak_memory_per_stage(peaks):
            results = run_check(name, overrides, "cuda", out)
        rate, tokens, seconds = debate_rate(results)
        report[name] = {"seconds": round(time.perf_counter() - start, 1), "debate_tokens_per_s": round(rate, 1),
                        "peak_gib": {k: round(v, 2) for k, v in peaks.items()}}
        if name == "llama1b_lora":
            settings = validate(compose([*overrides, "device=cuda"]))
            raw = raw_forward_rate(str(model_dir), batch=min(settings.backend.options.get("batch_size", 64),
                                                             3 * args.problems),
                                   prompt=128, new=settings.debate.max_new_tokens)
            report[name]["raw_forward_tokens_per_s"] = round(raw, 1)
            report[name]["debate_share_of_raw"] = round(rate / raw, 3)
        print(f"{name}: {report[name]}", flush=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(f"report: {out / 'gpu_check.json'}")
    return 0


def cpu_check(out: Path, problems: int) -> int:
    """``--cpu``: every run of :func:`cpu_runs` for real on the CPU; the report goes to ``out/cpu_check.json``."""
    model_dir = build_random_llama(out / "random_llama_toy", TOY)
    report = {}
    for name, overrides, skipped in cpu_runs(model_dir, problems):
        if skipped:
            print(f"{name}: skipped: {skipped}")
            continue
        start = time.perf_counter()
        results = run_check(name, overrides, "cpu", out)
        report[name] = {"seconds": round(time.perf_counter() - start, 1),
                        "debate_tokens_per_s": round(debate_rate(results)[0], 1), **cpu_summary(results)}
        print(f"{name}: {report[name]}", flush=True)
    (out / "cpu_check.json").write_text(json.dumps(report, indent=2))
    print(f"report: {out / 'cpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
