"""Generation with vLLM (GPU only: ``pip install 'mafl[vllm]'``): one engine on the base model, the society's LoRA
adapters served per request (``LoRARequest``), every request of a call handed to the engine at once.

Prompts are rendered and tokenized here, with the same tokenizer and chat template as the transformers backend
(``mafl.models.load_tokenizer``) and the same function (``mafl.backends.chat``), and sent to the engine as token
ids, so that both backends, and the trainer, see the same tokens.

A model fine-tuned in full (``finetune.mode=full``) cannot share the engine's base weights, and a second engine
would need a second share of the GPU's memory: loading one raises ``NotImplementedError`` (use ``backend=hf``).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Sequence

from mafl.backends import chat
from mafl.backends.base import (Capabilities, Completion, GenerationRequest, Sampling, Score, ScoringRequest,
                                request_seed)
from mafl.errors import plain
from mafl.models import is_adapter_folder, load_tokenizer
from mafl.progress import is_verbose

INSTALL_HINT = "pip install 'mafl[vllm]'"
NO_TOP_K = -1  # vLLM's "consider every token": required before 0.9, still accepted after (which prefers 0)


def import_vllm():
    """The ``vllm`` module, or an ImportError that says how to install it."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(f"backend=vllm needs vLLM (a CUDA GPU machine): {INSTALL_HINT}")
    import vllm

    return vllm


def _token_logprob(entry, token: int) -> float:
    value = entry[token]  # vLLM always includes the prompt's own token among a position's logprobs
    return float(getattr(value, "logprob", value))


class VLLMBackend:
    capabilities = Capabilities(score=True, full_models=False, chunk_size=1000)  # a whole benchmark per round
    operational_keys = ("gpu_memory_utilization",)  # backend.* keys that may change on resume

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 1024,
        chat_template: str | None = None,
        trust_remote_code: bool = False,
        gpu_memory_utilization: float = 0.85,
        max_lora_rank: int = 64,
        max_loras: int = 8,
        seed: int = 0,
        engine_kwargs: dict | None = None,
        progress: bool = False,
    ):
        """``device`` is accepted for the common backend signature; vLLM runs on the platform it was built for.
        ``engine_kwargs`` are further ``vllm.LLM`` (EngineArgs) arguments, passed straight through."""
        self._vllm = import_vllm()
        from vllm.lora.request import LoRARequest

        self._lora_request_class = LoRARequest
        self.model_path = model_path
        self.device = device
        self.batch_size = int(batch_size)
        self.max_lora_rank = int(max_lora_rank)
        self.progress = progress
        self.tokenizer = load_tokenizer(model_path, chat_template=chat_template, trust_remote_code=trust_remote_code)
        self.llm = self._vllm.LLM(
            model=model_path, dtype=dtype, enable_lora=True, max_lora_rank=self.max_lora_rank,
            max_loras=int(max_loras), gpu_memory_utilization=float(gpu_memory_utilization), seed=int(seed),
            trust_remote_code=trust_remote_code, **dict(plain(engine_kwargs) or {}),
        )
        self._lora: dict[str, Any] = {}  # adapter name -> its LoRARequest
        self._next_id = 0

    # -- the society's weights -------------------------------------------------------------------------------
    def load_adapter(self, name: str, path: str) -> None:
        """Serve the LoRA adapter in ``path`` as ``name`` (replacing any adapter of that name)."""
        folder = Path(path)
        if not is_adapter_folder(folder):
            if not folder.exists():
                raise FileNotFoundError(f"no model folder at {path}")
            raise NotImplementedError(
                f"{path} holds a whole fine-tuned model (finetune.mode=full); backend=vllm serves LoRA adapters on "
                "one engine only: use backend=hf for full fine-tuning")
        rank = json.loads((folder / "adapter_config.json").read_text()).get("r")
        if rank is not None and int(rank) > self.max_lora_rank:
            raise ValueError(f"backend.max_lora_rank: the adapter {name!r} has rank {rank}, above {self.max_lora_rank}")
        # a fresh id (and name) for every load: vLLM caches adapters by id, and a reloaded name has new weights
        self._next_id += 1
        self._lora[name] = self._lora_request_class(f"{name}-{self._next_id}", self._next_id, str(folder.resolve()))

    def unload(self, name: str) -> None:
        """Stop serving ``name``; the engine's LRU cache evicts adapters that are no longer requested."""
        self._lora.pop(name, None)

    def adapters(self) -> list[str]:
        return sorted(self._lora)

    def close(self) -> None:
        """Delete the engine and free the GPU's memory (fine-tuning needs it)."""
        llm, self.llm = self.llm, None
        self._lora.clear()
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if hasattr(engine_core, "shutdown"):  # vLLM V1 runs the engine in a process of its own
            engine_core.shutdown()
        del llm
        _free_gpu_memory()

    # -- prompts ---------------------------------------------------------------------------------------------
    def prompt_ids(self, messages) -> list[int]:
        return chat.prompt_ids(self.tokenizer, messages)

    def response_ids(self, response: str) -> list[int]:
        return chat.response_ids(self.tokenizer, response)

    def _route(self, adapter: str | None):
        """The LoRARequest of ``adapter`` (None: the base model)."""
        if adapter is None:
            return None
        if adapter not in self._lora:
            raise KeyError(f"no adapter named {adapter!r} is loaded (loaded: {self.adapters()})")
        return self._lora[adapter]

    def _engine(self):
        if self.llm is None:
            raise RuntimeError("the vLLM backend is closed")
        return self.llm

    # -- generation ------------------------------------------------------------------------------------------
    def sampling_params(self, s: Sampling, seed: int):
        """vLLM's SamplingParams for one request; it stops at the tokenizer's eos as the transformers backend."""
        common = dict(max_tokens=s.max_new_tokens, seed=seed, stop_token_ids=[self.tokenizer.eos_token_id])
        if s.greedy:
            return self._vllm.SamplingParams(temperature=0.0, top_p=1.0, top_k=NO_TOP_K, **common)
        return self._vllm.SamplingParams(
            temperature=s.temperature, top_p=s.top_p, top_k=s.top_k if s.top_k > 0 else NO_TOP_K, **common)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Completions in the order of ``requests``: up to ``batch_size`` requests per engine call, of any
        adapters and sampling settings (vLLM schedules and batches them itself)."""
        llm = self._engine()
        loras = [self._route(r.adapter) for r in requests]  # an unknown adapter fails before any work
        out: list[Completion] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = range(start, min(start + self.batch_size, len(requests)))
            prompts = [{"prompt_token_ids": self.prompt_ids(requests[i].messages)} for i in chunk]
            params = [self.sampling_params(requests[i].sampling, request_seed(requests[i].sampling.seed, i))
                      for i in chunk]
            results = llm.generate(prompts, params, lora_request=[loras[i] for i in chunk],
                                   use_tqdm=self.progress and is_verbose())
            if len(results) != len(prompts):
                raise RuntimeError(f"vLLM returned {len(results)} outputs for {len(prompts)} prompts")
            for res in results:
                o = res.outputs[0]
                out.append(Completion(text=o.text.strip(), num_tokens=len(o.token_ids),
                                      finished=o.finish_reason == "stop"))
        return out

    # -- likelihood ------------------------------------------------------------------------------------------
    def score(self, requests: Sequence[ScoringRequest]) -> list[Score]:
        """Sum of log-probabilities of each response (with its closing eos) given its prompt, read from the
        engine's prompt logprobs of prompt + response (one token is generated and ignored)."""
        llm = self._engine()
        loras = [self._route(r.adapter) for r in requests]
        # temperature 1 and no truncation: the model's own distribution (older vLLM applied them to logprobs)
        params = self._vllm.SamplingParams(max_tokens=1, temperature=1.0, top_p=1.0, top_k=NO_TOP_K,
                                           prompt_logprobs=1, detokenize=False)
        out: list[Score] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = range(start, min(start + self.batch_size, len(requests)))
            pairs = [(self.prompt_ids(requests[i].messages), self.response_ids(requests[i].response)) for i in chunk]
            prompts = [{"prompt_token_ids": p + r} for p, r in pairs]
            results = llm.generate(prompts, [params] * len(prompts), lora_request=[loras[i] for i in chunk],
                                   use_tqdm=self.progress and is_verbose())
            if len(results) != len(prompts):
                raise RuntimeError(f"vLLM returned {len(results)} outputs for {len(prompts)} prompts")
            for (p, r), res in zip(pairs, results):
                ids, logprobs = p + r, res.prompt_logprobs
                each = tuple(_token_logprob(logprobs[k], ids[k]) for k in range(len(p), len(ids)))
                out.append(Score(logprob=float(sum(each)), num_tokens=len(r), token_logprobs=each))
        return out


def _free_gpu_memory() -> None:
    import gc

    try:
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
    except ImportError:
        cleanup_dist_env_and_memory = None
    if cleanup_dist_env_and_memory is not None:
        cleanup_dist_env_and_memory()
        return
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
