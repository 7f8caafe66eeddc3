"""``mafl serve [FOLDER] [--model PATH] [--host 127.0.0.1] [--port 8000] ...``: serve a base model and the
fine-tuned weights of a run (or weights, or adapter) folder through an OpenAI-compatible API.

    mafl serve runs/default                 # the run's base model and every iteration's models (iter_k/<model>)
    mafl serve runs/default/iter_2/models   # the models of one iteration, by name
    mafl serve                              # the embedded default model (model=tiny), as `mafl` runs it
    mafl serve --model tiny                 # the base model alone (adapters can be loaded at run time)
    mafl serve runs/default --vllm-command  # print the `vllm serve` command that serves the same on a GPU

The API key of the server (optional) is read from the environment variable that ``--api-key-env`` names, never
from the command line (which other users of the machine can see).
"""
from __future__ import annotations

import argparse
import os
import sys

INSTALL_HINT = "pip install 'mafl[serve]'"
DEFAULT_MAX_LORAS = 16  # mafl.serve.app.DEFAULT_MAX_LORAS (not imported here: fastapi is optional)
DEFAULT_SLICE_TOKENS = 128  # mafl.serve.app.DEFAULT_SLICE_TOKENS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mafl serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", help="a run folder, a weights folder (iter_k/models) or an adapter folder")
    p.add_argument("--model", help="the base model: tiny, a folder or a hub name (default: the folder's)")
    p.add_argument("--served-model-name", help="the base model's name in the API (default: its path, as vLLM)")
    p.add_argument("--host", default="127.0.0.1", help="the address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default: %(default)s)")
    p.add_argument("--dtype", default=None, help="the weights' dtype (default: the run's, else float32)")
    p.add_argument("--batch-size", type=int, default=64, help="requests per generate() batch (default: %(default)s)")
    p.add_argument("--max-loras", type=int, default=DEFAULT_MAX_LORAS,
                   help="adapters held in memory at once; the least recently used is unloaded (and loaded again "
                        "from its folder when asked for) (default: %(default)s)")
    p.add_argument("--batch-wait-ms", type=float, default=20.0,
                   help="how long the first request of a batch waits for others (default: %(default)s)")
    p.add_argument("--max-n", type=int, default=16, help="the most completions one request may ask for (n) "
                   "(default: %(default)s)")
    p.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024,
                   help="the largest request body taken; larger ones get a 413 (default: %(default)s)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="the context in tokens, prompt and completion together (default: the model's "
                        "max_position_embeddings)")
    p.add_argument("--slice-tokens", type=int, default=DEFAULT_SLICE_TOKENS,
                   help="decode steps a generation runs before it gives way to waiting requests (default: "
                        "%(default)s)")
    p.add_argument("--api-key-env", metavar="NAME", help="require the API key held by environment variable NAME")
    p.add_argument("--vllm-command", action="store_true", help="print the `vllm serve` command and exit")
    p.add_argument("--inject-faults", metavar="SPEC", help="tests only: e.g. 429=0.1,500=0.1,drop=0.1,oom=0.1,seed=0 "
                   "(mafl/serve/faults.py)")
    p.add_argument("--log-level", default="warning", help="uvicorn's log level (default: %(default)s)")
    return p


def model_settings(weights, model: str) -> None:
    """``--model``: the name of a model config (``tiny``, ``llama3``: conf/model/<name>.yaml), or a path."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from mafl.model_path import resolve_model_path
    from mafl.models import ModelSettings

    preset = Path(__file__).resolve().parents[1] / "conf" / "model" / f"{model}.yaml"
    c = OmegaConf.to_container(OmegaConf.load(preset)) if preset.exists() else {"path": model, "dtype": "float32"}
    c.pop("defaults", None)  # a hub preset's run set-up (conf/hub/), not model keys
    settings = ModelSettings.from_cfg(c)
    weights.base = resolve_model_path(settings)
    weights.model = dict(dtype=settings.dtype, chat_template=settings.chat_template,
                         trust_remote_code=settings.trust_remote_code)


def fail(message: str) -> int:
    print(f"mafl serve: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from mafl.errors import ConfigError
    from mafl.serve.weights import ServedWeights, find_weights

    for flag in ("max_loras", "max_n", "max_body_bytes", "max_model_len", "slice_tokens", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            return fail(f"--{flag.replace('_', '-')}: must be >= 1 (got {value})")
    try:
        weights = find_weights(args.folder) if args.folder else ServedWeights(base=None)
        if args.model or not args.folder:  # no folder: the embedded default model, as `mafl` runs it
            model_settings(weights, args.model or "tiny")
    except (FileNotFoundError, ConfigError) as e:
        return fail(str(e).replace("model.path:", "--model:"))
    if weights.base is None:
        return fail("the base model is not known from the folder: pass --model")
    if args.vllm_command:
        from mafl.serve.weights import vllm_command

        print(vllm_command(weights))
        return 0
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(f"mafl serve: --api-key-env: the environment variable {args.api_key_env} is not set", file=sys.stderr)
            return 2
    spec = None
    if args.inject_faults:
        from mafl.serve.faults import FaultSpec

        try:
            spec = FaultSpec.parse(args.inject_faults)
        except ValueError as e:
            print(f"mafl serve: {e}", file=sys.stderr)
            return 2
    try:
        import uvicorn

        from mafl.serve.app import Server, create_app
        from mafl.serve.guard import Guard, log_config
        from mafl.serve.limits import Limits, context_length, max_token_bytes
    except ImportError as e:
        print(f"mafl serve needs fastapi and uvicorn ({e.name} is missing): {INSTALL_HINT}", file=sys.stderr)
        return 2
    from mafl.backends.hf import HFBackend
    from mafl.errors import one_line
    from mafl.models import check_model_folder

    model = weights.model
    try:
        check_model_folder(weights.base, "--model")
        backend = HFBackend(weights.base, dtype=args.dtype or model.get("dtype", "float32"), device=args.device,
                            batch_size=args.batch_size, chat_template=model.get("chat_template"),
                            trust_remote_code=bool(model.get("trust_remote_code", False)))
        limits = Limits(context=context_length(backend.base.config, backend.tokenizer, args.max_model_len),
                        max_n=args.max_n, max_body_bytes=args.max_body_bytes,
                        max_token_bytes=max_token_bytes(backend.tokenizer))
        server = Server(backend, args.served_model_name or weights.base, weights.adapters,
                        batch_wait=args.batch_wait_ms / 1000, api_key=api_key, max_loras=args.max_loras,
                        limits=limits, slice_tokens=args.slice_tokens)
    except (OSError, ValueError) as e:  # no model there, weights that do not load
        return fail(one_line(e))
    app = create_app(server)
    if spec is not None:
        from mafl.serve.faults import FaultInjection, ForwardFaults

        forward = ForwardFaults(backend.base, spec.rates["oom"], spec.seed) if spec.rates.get("oom") else None
        app = FaultInjection(app, spec, forward)
    app = Guard(app, max_body_bytes=limits.max_body_bytes, authorized=server.authorized)
    banner = (f"mafl serve: {server.base_name} and {len(server.roots)} adapter(s) at "
              f"http://{args.host}:{args.port}/v1")

    class Announced(uvicorn.Server):
        """uvicorn's server, which prints the banner once the port is bound and listening."""

        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:
                print(banner, flush=True)

    Announced(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                             log_config=log_config())).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
