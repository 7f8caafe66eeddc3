"""``python -m mafl.tiny [--rebuild] [--steps N] [key=value ...]``: build the embedded model here, print its folder
and its Arithmetic accuracy (greedy, round-1 prompt, 500 held-out problems); for a recipe whose model mafl ships
(the default), also whether this machine builds the shipped weights, and if not, what differs."""
from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    from omegaconf import OmegaConf

    from mafl.tiny import ensure_tiny_model, read_recipe, tiny_model_key, tiny_weights
    from mafl.tiny.corpus import conf_dir
    from mafl.tiny.shipped import shipped_model, why_different

    parser = argparse.ArgumentParser(prog="python -m mafl.tiny", description=__doc__)
    parser.add_argument("--rebuild", action="store_true", help="pretrain again even when cached")
    parser.add_argument("--steps", type=int, default=None, help="pretraining steps (recipe key `steps`)")
    parser.add_argument("--n-eval", type=int, default=500, help="held-out problems to evaluate (0: none)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="other recipe keys")
    args = parser.parse_args(argv)
    recipe = dict(OmegaConf.to_container(OmegaConf.load(conf_dir() / "model" / "tiny.yaml").tiny))
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"expected key=value, got {item!r}")
        recipe[key] = value
    if args.steps is not None:
        recipe["steps"] = args.steps
    path = ensure_tiny_model(recipe, rebuild=args.rebuild, build=True)
    print(f"tiny model: {path}")
    recipe_json = read_recipe(path)
    print(f"pretraining: {recipe_json['pretrain_seconds']} s")
    built = recipe_json.get("built_with")  # models built before it was recorded have none
    cpu = f", {built['cpu']}" if built and built.get("cpu") else ""  # older builds did not record it
    how = (f"torch {built['torch']}, CPU kernels {built['cpu_capability']}, {built['threads']} thread(s){cpu}" if built
           else "built before the build was recorded")
    sha = tiny_weights(path)
    print(f"weights sha256 {sha[:16]} ({how}; another kind of CPU builds other weights)")
    shipped = shipped_model(tiny_model_key(recipe))
    if shipped is not None and sha == shipped.weights_sha256:
        print("the shipped model's weights: this machine builds what mafl ships")
    elif shipped is not None:
        print(f"not the shipped model's weights ({shipped.weights_sha256[:16]}): "
              f"{why_different(shipped.built_with(), built or {})}. Runs of model=tiny use the shipped model; "
              f"model.path={path} runs on this build")
    if args.n_eval > 0:
        evaluate(path, args.n_eval)


def evaluate(path, n: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mafl.tiny.corpus import eval_problems
    from mafl.tiny.evaluate import accuracy

    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    acc = accuracy(model, tokenizer, eval_problems(n))
    print(f"greedy accuracy on {acc.n} Arithmetic problems: {acc.accuracy:.1%} (± {acc.stderr:.1%})")


if __name__ == "__main__":
    main()
