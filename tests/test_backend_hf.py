"""The transformers backend on a random tiny Llama (untied, so that its greedy answers differ by prompt): batching with left padding, seeding, LoRA adapters and whole
fine-tuned models mixed in one call (both ``group_adapters`` settings), ``generate_kwargs``, ``device=auto``, and
likelihoods checked against unbatched forward passes of independently loaded models.

Prompts and responses have different lengths on purpose: every batch is padded."""
from __future__ import annotations

import pytest
import torch

from mafl.backends import GenerationRequest, Sampling, ScoringRequest, backend_class
from mafl.backends.hf import HFBackend

GREEDY = Sampling(temperature=0.0, max_new_tokens=8)
QUESTIONS = ["What is 3+4?", "What is the result of 12+7*3+4-5*6?", "Add 1 and 1.",
             "What is the result of 3+4*5+6-7*8? Make sure to state your answer at the end of the response.",
             "These are the answers of other agents: Agent 1: The answer is 12. What is 2*2?", "Hi"]
RESPONSES = ["7.", "The answer is 3.", "4*5=20, 7*8=56, 3+6=9, 9+20=29, 29-56=-27. The answer is -27."]
ADAPTERS = ["generator_0", "critic_0"]


def msgs(q: str) -> list[dict]:
    return [{"role": "system", "content": "You solve problems."}, {"role": "user", "content": q}]


def chat_prompt(tok, messages) -> list[int]:
    """The prompt's token ids, computed here with the tokenizer's own chat template (not mafl's helper)."""
    return list(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                        return_dict=True)["input_ids"])


def make_lora(model_dir, out, seed: int):
    """A LoRA adapter with random (non-zero) weights, so that it changes the model's outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def lora_dirs(talking_model_dir, tmp_path_factory) -> dict[str, str]:
    """Two different adapters, by the names they are served under."""
    return {name: str(make_lora(talking_model_dir, tmp_path_factory.mktemp(name), seed=k + 1))
            for k, name in enumerate(ADAPTERS)}


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory):
    """A whole model with the base model's architecture and tokenizer but other weights (a full fine-tune)."""
    from conftest import make_random_model

    return str(make_random_model(tmp_path_factory.mktemp("full"), seed=5, tie=False))


@pytest.fixture(params=[True, False], ids=["grouped", "mixed"])
def group_adapters(request) -> bool:
    return request.param


@pytest.fixture()
def backend(talking_model_dir, group_adapters):
    return HFBackend(str(talking_model_dir), batch_size=4, group_adapters=group_adapters)


def record_generate(monkeypatch, model) -> list[dict]:
    """Record the arguments of every ``model.generate`` call (the real call still runs)."""
    calls = []
    real = model.generate

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", recording)
    return calls


def test_backend_lookup_by_name():
    assert backend_class("hf") is HFBackend
    with pytest.raises(ValueError, match="backend.name"):
        backend_class("nope")


def test_the_prompts_have_different_lengths(backend):
    assert len({len(backend.prompt_ids(msgs(q))) for q in QUESTIONS}) == len(QUESTIONS)


def test_batched_generation_equals_unbatched_greedy(backend, monkeypatch):
    reqs = [GenerationRequest(msgs(q), sampling=GREEDY) for q in QUESTIONS]
    calls = record_generate(monkeypatch, backend.base)
    batched = backend.generate(reqs)
    masks = [c["attention_mask"] for c in calls]
    assert len(calls) == 2 and all((m == 0).any() for m in masks)  # batches of 4 and 2, both left-padded
    single = [backend.generate([r])[0] for r in reqs]
    assert batched == single
    assert len({c.text for c in batched}) > 1
    # without eos in 8 tokens (a random model), every completion is cut: 8 tokens each, not finished
    assert all(c.num_tokens == GREEDY.max_new_tokens and not c.finished for c in batched)


def test_num_tokens_counts_what_was_generated(backend):
    lengths = [3, 9, 5]
    reqs = [GenerationRequest(msgs(q), sampling=Sampling(temperature=0.0, max_new_tokens=n))
            for q, n in zip(QUESTIONS, lengths)]
    assert [c.num_tokens for c in backend.generate(reqs)] == lengths


def test_generate_kwargs_reach_model_generate(talking_model_dir, group_adapters):
    """``generate_kwargs`` are passed to ``model.generate``: a forced eos ends every response at the last token."""
    plain = HFBackend(str(talking_model_dir), batch_size=4, group_adapters=group_adapters)
    eos = plain.tokenizer.eos_token_id
    forced = HFBackend(str(talking_model_dir), batch_size=4, group_adapters=group_adapters,
                       generate_kwargs={"forced_eos_token_id": eos})
    reqs = [GenerationRequest(msgs(q), sampling=GREEDY) for q in QUESTIONS]
    before, after = plain.generate(reqs), forced.generate(reqs)
    assert not any(c.finished for c in before)  # a random model says no eos in 8 tokens
    assert all(c.finished and c.num_tokens == GREEDY.max_new_tokens for c in after)


def test_an_eos_of_generate_kwargs_ends_a_response(talking_model_dir, group_adapters):
    """``generate_kwargs={"eos_token_id": [...]}``: a response ends at the first of those tokens, where the model
    stops (the rest of its batch row is padding, not part of the response)."""
    plain = HFBackend(str(talking_model_dir), group_adapters=group_adapters)
    ids = torch.tensor([plain.prompt_ids(msgs(QUESTIONS[1]))])
    with torch.no_grad():
        said = plain.base.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                   max_new_tokens=GREEDY.max_new_tokens)[0, ids.shape[1]:].tolist()
    stop = said[3]
    k = said.index(stop)  # its first place in the response
    backend = HFBackend(str(talking_model_dir), batch_size=8, group_adapters=group_adapters,
                        generate_kwargs={"eos_token_id": [plain.tokenizer.eos_token_id, stop]})
    reqs = [GenerationRequest(msgs(q), sampling=GREEDY) for q in QUESTIONS]  # one batch: the others go on
    out = backend.generate(reqs)[1]
    assert out.finished and out.num_tokens == k + 1
    assert out.text == plain.tokenizer.decode(said[:k], skip_special_tokens=True).strip()


def test_seeded_sampling_is_reproducible_and_seed_dependent(backend):
    def run(seed):
        s = Sampling(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=16, seed=seed)
        return [c.text for c in backend.generate([GenerationRequest(msgs(q), sampling=s) for q in QUESTIONS])]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_a_sampled_request_depends_on_its_seed_and_prompt_only(backend, lora_dirs):
    """Each row samples with its own generator: a request alone, and batched (padded) among others of other
    models and seeds, gives the same text (issue 23: seeds were per batch)."""
    for name, path in lora_dirs.items():
        backend.load_adapter(name, path)
    s = Sampling(temperature=1.0, top_k=50, top_p=0.9, max_new_tokens=16)
    one = GenerationRequest(msgs(QUESTIONS[1]), adapter="generator_0", sampling=s)
    alone = backend.generate_seeded([one], [11])[0].text
    others = [GenerationRequest(msgs(q), adapter=a, sampling=s) for q, a in zip(QUESTIONS, [None, "critic_0"] * 3)]
    batched = backend.generate_seeded([*others[:2], one, *others[2:]], [1, 2, 11, 3, 4, 5, 6])
    assert batched[2].text == alone
    assert backend.generate_seeded([one], [12])[0].text != alone  # the seed decides


def test_a_failed_forward_pass_leaves_no_peft_hooks_behind(backend, lora_dirs):
    """peft registers its adapter_names hooks for one call and does not remove them when the call raises: a base
    model batch afterwards ran with the failed call's adapter (issue 23)."""
    for name, path in lora_dirs.items():
        backend.load_adapter(name, path)
    reqs = [GenerationRequest(msgs(q), sampling=GREEDY) for q in QUESTIONS[:3]]
    before = backend.generate(reqs)
    with pytest.raises(RuntimeError):
        backend.token_logprobs([[]], "generator_0")  # an empty row: the forward pass raises
    hooks = [h for m in backend.peft.modules() for h in m._forward_pre_hooks.values()
             if getattr(getattr(h, "func", None), "__name__", "").endswith("_pre_forward_hook")]
    assert hooks == []
    assert backend.generate(reqs) == before


def test_adapters_and_full_models_in_one_call_match_separate_calls(backend, group_adapters, lora_dirs, full_dir,
                                                                   monkeypatch):
    for name, path in lora_dirs.items():
        backend.load_adapter(name, path)
    backend.load_adapter("critic_1", full_dir)  # a whole model: served beside the base model
    assert backend.adapters() == ["critic_0", "critic_1", "generator_0"]
    names = [None, "generator_0", "critic_0", "critic_1"]
    reqs = [GenerationRequest(msgs(q), adapter=names[i % 4], sampling=GREEDY) for i, q in enumerate(QUESTIONS * 2)]
    peft_calls = record_generate(monkeypatch, backend.peft)
    full_calls = record_generate(monkeypatch, backend.full_models["critic_1"])
    together = [c.text for c in backend.generate(reqs)]
    if group_adapters:  # one model per batch: base, generator_0, critic_0 (3 requests each, batch_size 4)
        assert len(peft_calls) == 3 and all("adapter_names" not in c for c in peft_calls)
    else:  # the LoRA models and the base model share batches (4, then 4, then 1); a batch of one model takes
        # peft's plain path, a batch of several names each row's model
        assert [c["input_ids"].shape[0] for c in peft_calls] == [4, 4, 1]
        mixed = [c["adapter_names"] for c in peft_calls if "adapter_names" in c]
        assert len(mixed) >= 1 and all(len(set(n)) > 1 for n in mixed)
        assert {n for names_ in mixed for n in names_} == {"__base__", "generator_0", "critic_0"}
    assert len(full_calls) == 1 and full_calls[0]["input_ids"].shape[0] == 3

    separate = [backend.generate([r])[0].text for r in reqs]
    assert together == separate
    # each model answers as a model of its own: the base requests match the bare base model, the full model's
    # match a backend on that model's folder, and the adapters change what is said
    base_only = HFBackend(backend.model_path).generate([r for r in reqs if r.adapter is None])
    assert [together[i] for i, r in enumerate(reqs) if r.adapter is None] == [c.text for c in base_only]
    full = HFBackend(full_dir).generate([GenerationRequest(r.messages, sampling=GREEDY) for r in reqs
                                         if r.adapter == "critic_1"])
    assert [together[i] for i, r in enumerate(reqs) if r.adapter == "critic_1"] == [c.text for c in full]
    by_model = {n: [together[i] for i, r in enumerate(reqs) if r.adapter == n] for n in names}
    as_base = {n: [c.text for c in HFBackend(backend.model_path).generate(
        [GenerationRequest(r.messages, sampling=GREEDY) for r in reqs if r.adapter == n])] for n in names[1:]}
    assert all(by_model[n] != as_base[n] for n in names[1:])


def test_unknown_adapter_is_a_clear_error(backend):
    with pytest.raises(KeyError, match="no adapter named"):
        backend.generate([GenerationRequest(msgs("hi"), adapter="generator_9", sampling=GREEDY)])
    with pytest.raises(ValueError, match="reserved"):
        backend.load_adapter("__base__", "anywhere")


def test_unload_restores_the_base_model(backend, lora_dirs, full_dir):
    reqs = [GenerationRequest(msgs(q), sampling=GREEDY) for q in QUESTIONS[:3]]
    before = backend.generate(reqs)
    backend.load_adapter("generator_0", lora_dirs["generator_0"])
    backend.load_adapter("critic_0", lora_dirs["critic_0"])
    backend.load_adapter("critic_1", full_dir)
    backend.unload("generator_0")
    assert backend.adapters() == ["critic_0", "critic_1"]
    assert backend.generate(reqs) == before
    backend.unload("critic_0")
    backend.unload("critic_1")
    backend.unload("never_loaded")
    assert backend.adapters() == [] and backend.peft is None and backend.full_models == {}
    assert backend.generate(reqs) == before


def test_reloading_a_name_replaces_its_weights(backend, lora_dirs):
    req = GenerationRequest(msgs(QUESTIONS[3]), adapter="critic_0", sampling=GREEDY)
    backend.load_adapter("critic_0", lora_dirs["critic_0"])
    first = backend.generate([req])[0].text
    backend.load_adapter("critic_0", lora_dirs["generator_0"])
    other = HFBackend(backend.model_path)
    other.load_adapter("generator_0", lora_dirs["generator_0"])
    assert backend.generate([req])[0].text == other.generate([GenerationRequest(
        req.messages, adapter="generator_0", sampling=GREEDY)])[0].text != first


def expected_logprob(model, tok, messages, response) -> tuple[float, int]:
    """Sum of the response's token log-probabilities (with eos), from one unbatched forward pass."""
    prompt = chat_prompt(tok, messages)
    resp = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + resp])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(resp)), len(resp)


def test_every_models_score_matches_an_unbatched_forward_pass(backend, lora_dirs, full_dir, talking_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for name, path in lora_dirs.items():
        backend.load_adapter(name, path)
    backend.load_adapter("critic_1", full_dir)
    names = [None, *ADAPTERS, "critic_1"]
    reqs = [ScoringRequest(msgs(q), response=RESPONSES[i % 3], adapter=a) for i, q in enumerate(QUESTIONS)
            for a in names]
    scores = backend.score(reqs)  # each model's 6 requests in padded batches of 4 and 2

    def fresh(name):  # each model loaded on its own, outside the backend
        if name == "critic_1":
            return AutoModelForCausalLM.from_pretrained(full_dir).eval()
        base = AutoModelForCausalLM.from_pretrained(talking_model_dir).eval()
        return base if name is None else PeftModel.from_pretrained(base, lora_dirs[name]).eval()

    models = {n: fresh(n) for n in names}
    tok = backend.tokenizer
    for req, score in zip(reqs, scores):
        want, n = expected_logprob(models[req.adapter], tok, req.messages, req.response)
        assert score.num_tokens == n
        assert score.logprob == pytest.approx(want, abs=1e-3), req.adapter
    # the adapters and the full model change likelihoods
    for i in range(0, len(reqs), len(names)):
        assert len({round(s.logprob, 3) for s in scores[i:i + len(names)]}) == len(names)


def test_device_auto_resolves_to_the_gpu_when_there_is_one(monkeypatch, talking_model_dir):
    from mafl.models import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cuda") == "cuda"
    monkeypatch.undo()
    backend = HFBackend(str(talking_model_dir), device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert backend.device == expected and next(backend.base.parameters()).device.type == expected
