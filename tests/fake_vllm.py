"""A stand-in for the ``vllm`` module, for the vLLM backend's contract tests on machines without vLLM.

It encodes mafl's reading of vLLM's API (``LLM(**engine args)``, ``LLM.generate(prompts, params, lora_request=,
use_tqdm=)`` with ``{"prompt_token_ids": ...}`` prompts, ``SamplingParams``, ``LoRARequest(name, int id, path)``,
``RequestOutput.outputs[0].{text, token_ids, finish_reason}`` and ``.prompt_logprobs``,
``vllm.platforms.current_platform.is_cpu()``, the CPU attention's head sizes), not vLLM itself: it records what the
backend hands the engine and answers with outputs derived from it. It also behaves as vLLM 0.32 does where mafl works around it: a base-model
request batched with LoRA requests gets the call's last adapter (CPU's LoRA kernels index the slots with -1), and
on CPU more than one request with prompt logprobs in a call fails. Whether vLLM really behaves so is checked by the
real-engine test (``test_backend_vllm_engine.py``, wherever vLLM is installed: its CPU build included).
"""
from __future__ import annotations

import importlib.machinery
import os
import sys
import types


def fake_logprob(position: int, token: int, lora) -> float:
    """The fake engine's log-probability of ``token`` at ``position`` (depends on all three)."""
    return -(0.01 * (position + 1) + 0.001 * token + (0.1 * lora.lora_int_id if lora else 0.0))


def fake_ids(ids: list[int], lora, n: int) -> list[int]:
    """The ``n`` tokens the fake engine generates after the prompt ``ids`` under ``lora`` (before any eos)."""
    return [10 + (sum(ids) + 7 * k + 13 * (lora.lora_int_id if lora else 0)) % 200 for k in range(n)]


class FakeLoRARequest:
    def __init__(self, lora_name, lora_int_id, lora_path):
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def __getattr__(self, key):
        return self.kwargs.get(key)


class FakeLogprob:
    def __init__(self, logprob):
        self.logprob = logprob


class FakeEngineCore:
    def __init__(self):
        self.shut_down = False

    def shutdown(self):
        self.shut_down = True


class FakePlatform:
    def __init__(self, cpu: bool):
        self.cpu = cpu

    def is_cpu(self) -> bool:
        return self.cpu


class FakeCPUAttentionBackend:
    @classmethod
    def get_supported_head_sizes(cls) -> list[int]:
        return [32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512]


class FakeLLM:
    created: list["FakeLLM"] = []
    platform = FakePlatform(cpu=False)
    length = 4  # tokens a completion has when max_tokens allows: 3 and the eos

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.environ = dict(os.environ)  # what the engine's processes would inherit
        self.calls: list[dict] = []
        self.llm_engine = types.SimpleNamespace(engine_core=FakeEngineCore())
        FakeLLM.created.append(self)

    def generate(self, prompts, sampling_params, *, lora_request=None, use_tqdm=True):
        self.calls.append(dict(prompts=prompts, params=sampling_params, loras=lora_request))
        scoring = [p.prompt_logprobs is not None for p in sampling_params]
        if self.platform.cpu and self.kwargs.get("enable_lora") and sum(scoring) > 1:
            raise RuntimeError("einsum(): subscript b has size 2 for operand 1 which does not broadcast")
        last = next((lora for lora in reversed(lora_request) if lora is not None), None)
        outputs = []
        for prompt, params, lora in zip(prompts, sampling_params, lora_request):
            lora = lora or last  # vLLM 0.32's CPU kernels: the base model's slot (-1) is the last adapter's
            ids = prompt["prompt_token_ids"]
            n = min(params.max_tokens, self.length)
            tokens = fake_ids(ids, lora, n)
            if n == self.length:
                tokens[-1] = params.stop_token_ids[0]
            prompt_logprobs = None
            if params.prompt_logprobs is not None:  # the prompt's own token, and a decoy as the top-1 token
                prompt_logprobs = [None] + [
                    {t: FakeLogprob(fake_logprob(k, t, lora)), t + 1000: FakeLogprob(-0.001)}
                    for k, t in enumerate(ids) if k > 0
                ]
            text = "" if params.detokenize is False else "an engine's own text"
            out = types.SimpleNamespace(text=text, token_ids=tokens,
                                        finish_reason="stop" if n == self.length else "length")
            outputs.append(types.SimpleNamespace(outputs=[out], prompt_logprobs=prompt_logprobs))
        return outputs


def install(monkeypatch, cpu: bool = False) -> types.ModuleType:
    """Put the fake ``vllm`` (``vllm.lora.request``, ``vllm.platforms``: a GPU, or a CPU) in ``sys.modules`` for one
    test."""
    vllm = types.ModuleType("vllm")
    vllm.__spec__ = importlib.machinery.ModuleSpec("vllm", loader=None)
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    vllm.lora, lora.request = lora, request
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = FakePlatform(cpu)
    vllm.platforms = platforms
    modules = [("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request), ("vllm.platforms", platforms)]
    for name in ("vllm.v1", "vllm.v1.attention", "vllm.v1.attention.backends", "vllm.v1.attention.backends.cpu_attn"):
        modules.append((name, types.ModuleType(name)))
    modules[-1][1].CPUAttentionBackend = FakeCPUAttentionBackend
    # the real vLLM's modules stay out, even where a test before this one imported them
    distributed = types.ModuleType("vllm.distributed")
    parallel_state = types.ModuleType("vllm.distributed.parallel_state")
    parallel_state.cleanup_dist_env_and_memory = lambda: None
    modules += [("vllm.distributed", distributed), ("vllm.distributed.parallel_state", parallel_state)]
    for name, module in modules:
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.created = []
    monkeypatch.setattr(FakeLLM, "platform", platforms.current_platform)
    return vllm
