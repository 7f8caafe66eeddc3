"""The real vLLM engine against the transformers backend (GPU only: skipped where vLLM or a CUDA GPU is missing).

The contract tests (``test_backend_vllm_contract.py``) check the backend against a fake engine; this test checks
the engine itself: the same prompt tokens, the same greedy answers of the base model and of a LoRA adapter mixed
in one call, and the same likelihoods.
"""
from __future__ import annotations

import pytest

from mafl.backends import GenerationRequest, Sampling, ScoringRequest

# prompts of different lengths, so that the engine's batches hold sequences of different lengths
QUESTIONS = ["What is 3+4?", "What is the result of 12+7*3+4-5*6?", "Add 1 and 1.",
             "What is the result of 3+4*5+6-7*8? Make sure to state your answer at the end of the response."]


def msgs(q: str) -> list[dict]:
    return [{"role": "system", "content": "You solve problems."}, {"role": "user", "content": q}]


@pytest.mark.slow
def test_real_vllm_agrees_with_transformers(tmp_path):
    pytest.importorskip("vllm")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    from conftest import make_random_model
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mafl.backends import chat
    from mafl.backends.hf import HFBackend
    from mafl.backends.vllm import VLLMBackend

    model_dir = make_random_model(tmp_path / "model", hidden=256, layers=2)  # head size 64: every attention kernel
    torch.manual_seed(1)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                                LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "lora")
    greedy = Sampling(temperature=0.0, max_new_tokens=12)
    reqs = [GenerationRequest(msgs(q), adapter=("critic_0" if i % 2 else None), sampling=greedy)
            for i, q in enumerate(QUESTIONS)]
    scoring = [ScoringRequest(msgs(q), response=r, adapter=a) for q, r in zip(QUESTIONS, ["7.", "The answer is 3."])
               for a in (None, "critic_0")]

    hf = HFBackend(str(model_dir), device="cuda", dtype="float32")
    hf.load_adapter("critic_0", str(tmp_path / "lora"))
    hf_texts, hf_scores = [c.text for c in hf.generate(reqs)], hf.score(scoring)
    hf.close()

    vb = VLLMBackend(str(model_dir), dtype="float32", gpu_memory_utilization=0.3, max_lora_rank=8, max_loras=2,
                     engine_kwargs={"max_model_len": 512, "enforce_eager": True})
    try:
        vb.load_adapter("critic_0", str(tmp_path / "lora"))
        # the engine reads the token ids mafl sends, as they are
        prompts = [{"prompt_token_ids": chat.prompt_ids(vb.tokenizer, r.messages)} for r in reqs]
        outputs = vb.llm.generate(prompts, [vb.sampling_params(greedy, 0)] * len(prompts), use_tqdm=False)
        assert [list(o.prompt_token_ids) for o in outputs] == [p["prompt_token_ids"] for p in prompts]
        assert [c.text for c in vb.generate(reqs)] == hf_texts
        assert len(set(hf_texts)) > 1
        for got, want in zip(vb.score(scoring), hf_scores):
            assert got.num_tokens == want.num_tokens
            assert got.logprob == pytest.approx(want.logprob, abs=1e-2)
    finally:
        vb.close()
