"""The transformers backend: batching, padding, seeding, adapters and likelihoods on a random tiny Llama."""
from __future__ import annotations

import pytest
import torch

from mafl.backends import GenerationRequest, Sampling, ScoringRequest, backend_class
from mafl.backends.hf import HFBackend

GREEDY = Sampling(temperature=0.0, max_new_tokens=12)
QUESTIONS = [f"What is the result of {a}+{a}*3+4-5*{a % 7}?" for a in range(6)]


def msgs(q: str) -> list[dict]:
    return [{"role": "system", "content": "You solve problems."}, {"role": "user", "content": q}]


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights, so that it changes the model's outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(base, cfg)
    out = tmp_path_factory.mktemp("lora")
    model.save_pretrained(out)
    return out


@pytest.fixture()
def backend(tiny_model_dir):
    return HFBackend(str(tiny_model_dir), batch_size=4)


def test_backend_lookup_by_name():
    assert backend_class("hf") is HFBackend
    with pytest.raises(ValueError, match="backend.name"):
        backend_class("nope")


def test_batched_generation_equals_unbatched_greedy(backend):
    reqs = [GenerationRequest(msgs(q), sampling=GREEDY) for q in QUESTIONS]
    batched = backend.generate(reqs)
    single = [backend.generate([r])[0] for r in reqs]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.num_tokens > 0 for c in batched)


def test_seeded_sampling_is_reproducible_and_seed_dependent(backend):
    def run(seed):
        s = Sampling(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=16, seed=seed)
        return [c.text for c in backend.generate([GenerationRequest(msgs(q), sampling=s) for q in QUESTIONS])]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_adapters_mixed_in_one_batch_match_separate_calls(backend, lora_dir):
    backend.load_adapter("critic_0", str(lora_dir))
    assert backend.adapters() == ["critic_0"]
    reqs = [GenerationRequest(msgs(q), adapter=("critic_0" if i % 2 else None), sampling=GREEDY)
            for i, q in enumerate(QUESTIONS)]
    mixed = [c.text for c in backend.generate(reqs)]
    separate = [backend.generate([r])[0].text for r in reqs]
    assert mixed == separate
    base_only = [c.text for c in backend.generate([GenerationRequest(msgs(q), sampling=GREEDY) for q in QUESTIONS])]
    assert mixed[1::2] != base_only[1::2]  # the adapter changes what is said
    assert mixed[0::2] == base_only[0::2]  # and the base requests are untouched by it


def test_unknown_adapter_is_a_clear_error(backend):
    with pytest.raises(KeyError, match="no adapter named"):
        backend.generate([GenerationRequest(msgs("hi"), adapter="generator_9", sampling=GREEDY)])


def test_unload_restores_the_base_model(backend, lora_dir):
    before = backend.generate([GenerationRequest(msgs(QUESTIONS[0]), sampling=GREEDY)])[0].text
    backend.load_adapter("generator_0", str(lora_dir))
    backend.unload("generator_0")
    assert backend.adapters() == []
    assert backend.generate([GenerationRequest(msgs(QUESTIONS[0]), sampling=GREEDY)])[0].text == before


def test_score_matches_a_direct_forward_pass(backend, lora_dir):
    backend.load_adapter("generator_1", str(lora_dir))
    reqs = [ScoringRequest(msgs(q), response=f"The answer is {i}.", adapter=a)
            for i, q in enumerate(QUESTIONS[:3]) for a in (None, "generator_1")]
    scores = backend.score(reqs)
    # recompute one by hand, unbatched, on the bare model
    tok = backend.tokenizer
    p = backend.prompt_ids(reqs[0].messages)
    r = tok(reqs[0].response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        with backend.peft.disable_adapter():
            logits = backend.peft(input_ids=torch.tensor([p + r])).logits[0]
    logp = torch.log_softmax(logits, -1)
    expected = sum(float(logp[len(p) - 1 + k, t]) for k, t in enumerate(r))
    assert scores[0].num_tokens == len(r)
    assert scores[0].logprob == pytest.approx(expected, abs=1e-3)
    assert all(s.logprob < 0 for s in scores)
    assert scores[0].logprob != pytest.approx(scores[1].logprob, abs=1e-4)  # the adapter changes likelihoods
