"""Benchmark of the embedded model (``model=tiny``): pretraining time, Arithmetic accuracy, generation speed.

    python experiments/benchmarks/tiny_model.py [--n 500] [--batch 256] [--threads 2]

Builds the default recipe of conf/model/tiny.yaml (or loads it from the cache), then prints the measured
pretraining time (from recipe.json), greedy and sampled (T=1, top_k=0, top_p=1) accuracy on held-out round-1
problems, and generation tokens/s with plain ``model.generate`` (KV cache, left padding) at batch 1 and at
batch B.
"""
from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="held-out problems for accuracy")
    parser.add_argument("--batch", type=int, default=256, help="batch size of the batched speed test")
    parser.add_argument("--n-single", type=int, default=16, help="prompts generated one at a time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()

    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mafl.tiny import ensure_tiny_model, read_recipe
    from mafl.tiny.corpus import conf_dir, eval_problems
    from mafl.tiny.evaluate import accuracy, generate, round1_prompts

    torch.set_num_threads(args.threads)
    recipe = OmegaConf.to_container(OmegaConf.load(conf_dir() / "model" / "tiny.yaml").tiny)
    path = ensure_tiny_model(recipe, rebuild=args.rebuild)
    info = read_recipe(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {path} ({params / 1e6:.2f}M parameters, recipe {recipe})")
    print(f"pretraining: {info['pretrain_seconds']:.0f} s ({recipe['steps']} steps)")

    problems = eval_problems(args.n)
    greedy = accuracy(model, tok, problems, batch_size=args.batch)
    sampled = accuracy(model, tok, problems, do_sample=True, batch_size=args.batch)
    print(f"greedy accuracy:  {greedy.accuracy:.1%} ± {greedy.stderr:.1%} (n={greedy.n})")
    print(f"sampled accuracy: {sampled.accuracy:.1%} ± {sampled.stderr:.1%} (T=1, top_k=0, top_p=1)")

    texts = round1_prompts(tok, eval_problems(max(args.batch, args.n_single), seed=1))
    generate(model, tok, texts[:2], batch_size=1)  # warm-up
    _, n1, s1 = generate(model, tok, texts[:args.n_single], batch_size=1)
    _, nb, sb = generate(model, tok, texts[:args.batch], batch_size=args.batch)
    single, batched = n1 / s1, nb / sb
    print(f"generation: {single:.0f} tokens/s at batch 1, {batched:.0f} tokens/s at batch {args.batch} "
          f"({batched / single:.1f}x)")


if __name__ == "__main__":
    main()
