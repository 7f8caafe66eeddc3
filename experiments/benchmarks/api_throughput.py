"""The cost of the HTTP path: debate tokens/s of backend=openai against `mafl serve` vs backend=hf in-process.

Prints, in one run on the same model, problems, society (2N LoRA adapters) and greedy decoding:
  * tokens/s of the transformers backend in this process (every agent and problem of a round in one call);
  * tokens/s of backend=openai talking to `mafl serve` (a subprocess on 127.0.0.1 over the same backend, which
    batches the requests that arrive together), and their ratio;
  * whether both gave the same completions (they should: greedy decoding).

    python experiments/benchmarks/api_throughput.py [--problems 30] [--agents 3] [--model tiny]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests"))


def timed_debate(backend, society, args, setup_out) -> tuple[int, float, list]:
    from mafl.debate.engine import debate_chunk

    cfg, debate, prompts, task, problems, base_path, _ = setup_out
    start = time.perf_counter()
    transcripts = debate_chunk(backend, task, problems, society, debate, prompts, seed=0)
    seconds = time.perf_counter() - start
    tokens = sum(u.num_tokens for t in transcripts for r in t.rounds for u in r)
    return tokens, seconds, [u.response for t in transcripts for r in t.rounds for u in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=30)
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--model", default="tiny", help="a conf/model preset")
    ap.add_argument("--model-path", default=None, help="a model folder instead of the preset's")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-concurrency", type=int, default=256)
    ap.add_argument("--batch-wait-ms", type=float, default=20.0, help="mafl serve --batch-wait-ms")
    args = ap.parse_args()
    from dataclasses import replace

    from debate_throughput import make_adapters, setup
    from serving import mafl_serve

    from mafl.backends.hf import HFBackend
    from mafl.backends.openai_api import OpenAIBackend
    from mafl.debate.society import Society

    out = setup(args)
    _, debate, prompts, task, problems, base_path, _ = out
    out = (out[0], replace(debate, temperature=0.0), *out[2:])
    society = Society(agents=debate.agents)
    work = Path(tempfile.mkdtemp(prefix="mafl-api-bench-"))
    society.weights = make_adapters(base_path, society.models, work / "models")

    hf = HFBackend(base_path, batch_size=args.batch_size)
    for name, path in society.weights.items():
        hf.load_adapter(name, path)
    hf_tokens, hf_s, hf_text = timed_debate(hf, society, args, out)
    hf.close()
    del hf

    with mafl_serve(["--model", base_path, "--batch-size", str(args.batch_size),
                     "--batch-wait-ms", str(args.batch_wait_ms)], work / "serve.log") as server:
        api = OpenAIBackend(base_path, base_url=server.url, max_concurrency=args.max_concurrency)
        for name, path in society.weights.items():
            api.load_adapter(name, path)
        api_tokens, api_s, api_text = timed_debate(api, society, args, out)
        api.close()

    print(f"model={args.model} agents={args.agents} rounds={debate.rounds} problems={args.problems} greedy, "
          f"society of {len(society.models)} LoRA adapters")
    print(f"backend=hf in-process        : {hf_tokens / hf_s:8.0f} tokens/s  ({hf_tokens} tokens in {hf_s:.1f} s)")
    print(f"backend=openai -> mafl serve : {api_tokens / api_s:8.0f} tokens/s  ({api_tokens} tokens in {api_s:.1f} s)")
    print(f"ratio openai / hf            : {(api_tokens / api_s) / (hf_tokens / hf_s):.2f}x  "
          f"(the cost of the HTTP path)")
    print(f"same completions             : {api_text == hf_text}")


if __name__ == "__main__":
    main()
