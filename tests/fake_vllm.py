"""A stand-in for the ``vllm`` module, for the vLLM backend's contract tests on machines without a GPU.

It encodes mafl's reading of vLLM's API (``LLM(**engine args)``, ``LLM.generate(prompts, params, lora_request=,
use_tqdm=)`` with ``{"prompt_token_ids": ...}`` prompts, ``SamplingParams``, ``LoRARequest(name, int id, path)``,
``RequestOutput.outputs[0].{text, token_ids, finish_reason}`` and ``.prompt_logprobs``), not vLLM itself: it records
what the backend hands the engine and answers with outputs derived from it. Whether vLLM really behaves so is
checked only by the real-engine test (``test_backend_vllm.py``, GPU).
"""
from __future__ import annotations

import importlib.machinery
import sys
import types


def fake_logprob(position: int, token: int, lora) -> float:
    """The fake engine's log-probability of ``token`` at ``position`` (depends on all three)."""
    return -(0.01 * (position + 1) + 0.001 * token + (0.1 * lora.lora_int_id if lora else 0.0))


def fake_text(ids: list[int], lora) -> str:
    return f"{lora.lora_name if lora else 'base'}:{sum(ids)}:{len(ids)}"


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


class FakeLLM:
    created: list["FakeLLM"] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls: list[dict] = []
        self.llm_engine = types.SimpleNamespace(engine_core=FakeEngineCore())
        FakeLLM.created.append(self)

    def generate(self, prompts, sampling_params, *, lora_request=None, use_tqdm=True):
        self.calls.append(dict(prompts=prompts, params=sampling_params, loras=lora_request))
        outputs = []
        for prompt, params, lora in zip(prompts, sampling_params, lora_request):
            ids = prompt["prompt_token_ids"]
            n = min(params.max_tokens, 4)
            prompt_logprobs = None
            if params.prompt_logprobs is not None:  # the prompt's own token, and a decoy as the top-1 token
                prompt_logprobs = [None] + [
                    {t: FakeLogprob(fake_logprob(k, t, lora)), t + 1000: FakeLogprob(-0.001)}
                    for k, t in enumerate(ids) if k > 0
                ]
            out = types.SimpleNamespace(text=f"  {fake_text(ids, lora)} \n", token_ids=list(range(n)),
                                        finish_reason="stop" if n < params.max_tokens else "length")
            outputs.append(types.SimpleNamespace(outputs=[out], prompt_logprobs=prompt_logprobs))
        return outputs


def install(monkeypatch) -> types.ModuleType:
    """Put the fake ``vllm`` (and ``vllm.lora.request``) in ``sys.modules`` for one test."""
    vllm = types.ModuleType("vllm")
    vllm.__spec__ = importlib.machinery.ModuleSpec("vllm", loader=None)
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    vllm.lora, lora.request = lora, request
    for name, module in [("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)]:
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.created = []
    return vllm
