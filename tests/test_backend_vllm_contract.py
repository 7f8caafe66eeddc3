"""Contract tests of the vLLM backend, against a fake engine.

vLLM needs a CUDA GPU. These tests run against ``fake_vllm`` (``tests/fake_vllm.py``), a hand-written stand-in
that encodes mafl's own reading of vLLM's API. They check what the backend hands the engine (the prompt tokens,
one ``SamplingParams`` per request with its seed, a ``LoRARequest`` per adapter, engine calls cut by
``batch_size``), how it reads the engine's outputs back (text, token counts, the cut flag, prompt logprobs for
likelihoods), and its errors. They cannot show that vLLM behaves as the fake does: ``test_backend_vllm_engine.py``
runs the real engine against the transformers backend where vLLM and a GPU exist."""
from __future__ import annotations

import json
import sys

import pytest

from fake_vllm import FakeLLM, fake_logprob, fake_text, install
from helpers import compose_cfg
from mafl.backends import GenerationRequest, Sampling, ScoringRequest, backend_class
from mafl.backends.vllm import VLLMBackend, request_seed

QUESTIONS = [f"What is the result of {a}+{a}*3+4-5*{a % 7}?" for a in range(5)]
T1 = Sampling(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=20, seed=7)


def msgs(q: str) -> list[dict]:
    return [{"role": "system", "content": "You solve problems."}, {"role": "user", "content": q}]


@pytest.fixture()
def fake_vllm(monkeypatch):
    return install(monkeypatch)


@pytest.fixture()
def backend(fake_vllm, tiny_model_dir):
    return VLLMBackend(str(tiny_model_dir), dtype="float32")


def adapter_dir(tmp_path, name: str, rank: int = 8):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    return folder


@pytest.fixture()
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def chat_ids(tokenizer, messages) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)
    return encoded["input_ids"]


# -- construction ------------------------------------------------------------------------------------------------
def test_backend_class_resolves_without_vllm():
    assert backend_class("vllm") is VLLMBackend


def test_missing_vllm_is_an_import_error_with_the_install_hint(monkeypatch, tiny_model_dir):
    monkeypatch.setitem(sys.modules, "vllm", None)  # find_spec reports None, as when vLLM is not installed
    with pytest.raises(ImportError, match=r"pip install 'mafl\[vllm\]'"):
        VLLMBackend(str(tiny_model_dir))


def test_built_from_the_config_as_the_session_does(fake_vllm, tiny_model_dir):
    cfg = compose_cfg(["backend=vllm", "seed=11", "+backend.engine_kwargs.max_model_len=512"])
    options = dict(cfg.backend)
    name = options.pop("name")
    backend = backend_class(name)(str(tiny_model_dir), dtype=cfg.model.dtype, device=cfg.device,
                                  chat_template=cfg.model.get("chat_template"), trust_remote_code=False,
                                  progress=False, **options)
    (llm,) = FakeLLM.created
    assert llm.kwargs == dict(
        model=str(tiny_model_dir), dtype=cfg.model.dtype, enable_lora=True, max_lora_rank=cfg.backend.max_lora_rank,
        max_loras=cfg.backend.max_loras, gpu_memory_utilization=cfg.backend.gpu_memory_utilization, seed=11,
        trust_remote_code=False, max_model_len=512)
    assert type(llm.kwargs["max_model_len"]) is int and backend.batch_size == cfg.backend.batch_size


# -- generation --------------------------------------------------------------------------------------------------
def test_one_engine_call_carries_every_request_with_its_adapter_in_order(backend, tokenizer, tmp_path):
    folders = {"generator_0": adapter_dir(tmp_path, "g0"), "critic_1": adapter_dir(tmp_path, "c1")}
    for name, folder in folders.items():
        backend.load_adapter(name, str(folder))
    names = [None, "generator_0", "critic_1", "generator_0", None]
    reqs = [GenerationRequest(msgs(q), adapter=a, sampling=T1) for q, a in zip(QUESTIONS, names)]
    completions = backend.generate(reqs)
    (call,) = backend.llm.calls
    assert len(call["prompts"]) == len(reqs) == len(call["params"]) == len(call["loras"])
    for lora, name in zip(call["loras"], names):
        if name is None:
            assert lora is None
        else:
            assert lora.lora_name.startswith(name + "-") and lora.lora_path == str(folders[name].resolve())
    assert call["loras"][1] is call["loras"][3] and call["loras"][1].lora_int_id != call["loras"][2].lora_int_id
    expected = [fake_text(chat_ids(tokenizer, msgs(q)), lora) for q, lora in zip(QUESTIONS, call["loras"])]
    assert [c.text for c in completions] == expected  # stripped, and in the order of the requests
    assert len(set(expected)) == len(expected)


def test_prompts_are_rendered_with_the_chat_template(backend, tokenizer, fake_vllm, tiny_model_dir):
    backend.generate([GenerationRequest(msgs(QUESTIONS[0]), sampling=T1)])
    ids = backend.llm.calls[0]["prompts"][0]["prompt_token_ids"]
    assert ids == chat_ids(tokenizer, msgs(QUESTIONS[0]))
    text = tokenizer.decode(ids)
    assert text.startswith("<|system|>You solve problems.<|end|><|user|>") and text.endswith("<|assistant|>")
    template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}[assistant]{% endif %}")
    custom = VLLMBackend(str(tiny_model_dir), chat_template=template)
    custom.generate([GenerationRequest(msgs(QUESTIONS[0]), sampling=T1)])
    text = tokenizer.decode(custom.llm.calls[0]["prompts"][0]["prompt_token_ids"])
    assert text.startswith("[system] You solve problems.\n[user] What") and text.endswith("[assistant]")


def test_sampling_params_per_request(backend, tokenizer):
    greedy = Sampling(temperature=0.0, top_k=5, top_p=0.5, max_new_tokens=3, seed=7)
    top_k = Sampling(temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=30, seed=7)
    reqs = [GenerationRequest(msgs(QUESTIONS[0]), sampling=s) for s in (T1, T1, greedy, top_k)]
    backend.generate(reqs)
    params = [p.kwargs for p in backend.llm.calls[0]["params"]]
    eos = [tokenizer.eos_token_id]
    assert params[0] == dict(temperature=1.0, top_p=1.0, top_k=-1, max_tokens=20, seed=request_seed(7, 0),
                             stop_token_ids=eos)
    assert params[2] == dict(temperature=0.0, top_p=1.0, top_k=-1, max_tokens=3, seed=request_seed(7, 2),
                             stop_token_ids=eos)
    assert (params[3]["temperature"], params[3]["top_p"], params[3]["top_k"]) == (0.7, 0.9, 20)
    # identical requests with one Sampling.seed are seeded apart, and the same call seeds them the same again
    assert params[0]["seed"] != params[1]["seed"]
    backend.generate(reqs)
    assert [p.kwargs["seed"] for p in backend.llm.calls[1]["params"]] == [p["seed"] for p in params]
    assert request_seed(8, 0) != request_seed(7, 0)


def test_completion_counts_tokens_and_reports_a_cut(backend):
    short, long = Sampling(max_new_tokens=2), Sampling(max_new_tokens=50)
    cut, done = backend.generate([GenerationRequest(msgs(QUESTIONS[0]), sampling=s) for s in (short, long)])
    assert (cut.num_tokens, cut.finished) == (2, False)
    assert (done.num_tokens, done.finished) == (4, True)


def test_batch_size_cuts_engine_calls_without_changing_results(fake_vllm, tiny_model_dir):
    reqs = [GenerationRequest(msgs(q), sampling=T1) for q in QUESTIONS]
    whole = VLLMBackend(str(tiny_model_dir), batch_size=100)
    cut = VLLMBackend(str(tiny_model_dir), batch_size=2)
    assert whole.generate(reqs) == cut.generate(reqs)
    assert [len(c["prompts"]) for c in cut.llm.calls] == [2, 2, 1]
    assert [p.kwargs["seed"] for c in cut.llm.calls for p in c["params"]] == \
        [p.kwargs["seed"] for p in whole.llm.calls[0]["params"]]


# -- likelihood --------------------------------------------------------------------------------------------------
def test_score_sums_exactly_the_response_tokens_prompt_logprobs(backend, tokenizer, tmp_path):
    backend.load_adapter("generator_1", str(adapter_dir(tmp_path, "g1")))
    reqs = [ScoringRequest(msgs(q), response=f"The answer is {i}.", adapter=a)
            for i, q in enumerate(QUESTIONS[:3]) for a in (None, "generator_1")]
    scores = backend.score(reqs)
    (call,) = backend.llm.calls
    assert len({id(p) for p in call["params"]}) == 1  # one setting for all
    p0 = call["params"][0].kwargs
    assert p0["max_tokens"] == 1 and p0["prompt_logprobs"] >= 0 and p0["temperature"] == 1.0 and p0["top_k"] == -1
    for req, lora, score in zip(reqs, call["loras"], scores):
        prompt = chat_ids(tokenizer, req.messages)
        response = tokenizer(req.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = prompt + response
        expected = sum(fake_logprob(k, ids[k], lora) for k in range(len(prompt), len(ids)))
        assert score.num_tokens == len(response)
        assert score.logprob == pytest.approx(expected, abs=1e-9)
        assert (lora is None) == (req.adapter is None)
    assert scores[0].logprob != pytest.approx(scores[1].logprob)


# -- adapters ----------------------------------------------------------------------------------------------------
def test_unknown_adapter_is_a_key_error_before_any_work(backend):
    with pytest.raises(KeyError, match="no adapter named 'generator_9'"):
        backend.generate([GenerationRequest(msgs("hi")), GenerationRequest(msgs("hi"), adapter="generator_9")])
    with pytest.raises(KeyError, match="no adapter named"):
        backend.score([ScoringRequest(msgs("hi"), response="x", adapter="critic_0")])
    assert backend.llm.calls == []


def test_reload_unload_and_adapters(backend, tmp_path):
    first, second = adapter_dir(tmp_path, "a"), adapter_dir(tmp_path, "b")
    backend.load_adapter("critic_0", str(first))
    backend.load_adapter("generator_0", str(first))
    old = backend._route("critic_0")
    backend.load_adapter("critic_0", str(second))  # new weights under the same name: a new id for vLLM's cache
    new = backend._route("critic_0")
    assert new.lora_int_id not in {old.lora_int_id, backend._route("generator_0").lora_int_id}
    assert new.lora_path == str(second.resolve()) and new.lora_name != old.lora_name
    assert backend.adapters() == ["critic_0", "generator_0"]
    backend.unload("critic_0")
    assert backend.adapters() == ["generator_0"]
    with pytest.raises(KeyError):
        backend.generate([GenerationRequest(msgs("hi"), adapter="critic_0")])


def test_weights_vllm_cannot_serve_are_refused_clearly(backend, tmp_path):
    whole = tmp_path / "full_model"
    whole.mkdir()
    (whole / "config.json").write_text("{}")
    with pytest.raises(NotImplementedError, match="finetune.mode=full"):
        backend.load_adapter("generator_0", str(whole))
    with pytest.raises(FileNotFoundError):
        backend.load_adapter("generator_0", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="backend.max_lora_rank"):
        backend.load_adapter("generator_0", str(adapter_dir(tmp_path, "big", rank=128)))
    assert backend.adapters() == []


def test_close_shuts_the_engine_down(backend, tmp_path):
    backend.load_adapter("generator_0", str(adapter_dir(tmp_path, "g0")))
    llm = backend.llm
    backend.close()
    assert llm.llm_engine.engine_core.shut_down and backend.llm is None and backend.adapters() == []
    backend.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate([GenerationRequest(msgs("hi"))])
