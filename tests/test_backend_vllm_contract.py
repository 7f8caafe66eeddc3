"""Contract tests of the vLLM backend, against a fake engine.

CI does not install vLLM (docs/vllm.md: its install is too large for CI's budget). These tests run against
``fake_vllm`` (``tests/fake_vllm.py``), a hand-written stand-in that encodes mafl's own reading of vLLM's API and
vLLM 0.32's defects that mafl works around. They check what the backend hands the engine (the prompt tokens, one
``SamplingParams`` per request with its seed, a ``LoRARequest`` per adapter, the base model's requests in calls
apart from the adapters', engine calls cut by ``batch_size``, the platform's engine arguments), how it reads the
engine's outputs back (text decoded from the token ids, token counts, the cut flag, prompt logprobs for likelihoods),
and its errors. They cannot show that vLLM behaves as the fake does: ``test_backend_vllm_engine.py`` runs the real
engine against the transformers backend wherever vLLM is installed (``bash experiments/vllm_check.sh`` on CPU)."""
from __future__ import annotations

import json
import os
import sys

import pytest

from fake_vllm import FakeLLM, fake_ids, fake_logprob, install
from helpers import compose_cfg
from mafl.backends import GenerationRequest, Sampling, ScoringRequest, backend_class, chat
from mafl.errors import ConfigError
from mafl.backends.vllm import CPU_KV_CACHE_BYTES, VLLMBackend, engine_calls, request_seed

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


@pytest.fixture(scope="module")
def head32_model_dir(tmp_path_factory):
    """A random Llama whose attention heads have size 32 (hidden 128, 4 heads), the least vLLM's CPU build serves;
    the same tokenizer as ``tiny_model_dir``'s."""
    from conftest import make_random_model

    return make_random_model(tmp_path_factory.mktemp("head32"), hidden=128)


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


def build_from_config(tiny_model_dir, overrides):
    cfg = compose_cfg(["backend=vllm", "seed=11", *overrides])
    options = dict(cfg.backend)
    name = options.pop("name")
    backend = backend_class(name)(str(tiny_model_dir), dtype=cfg.model.dtype, device=cfg.device,
                                  chat_template=cfg.model.get("chat_template"), trust_remote_code=False,
                                  progress=False, **options)
    (llm,) = FakeLLM.created
    return cfg, backend, llm


def test_built_from_the_config_as_the_session_does(fake_vllm, tiny_model_dir):
    cfg, backend, llm = build_from_config(tiny_model_dir, ["+backend.engine_kwargs.max_model_len=512"])
    assert llm.kwargs == dict(
        model=str(tiny_model_dir), dtype=cfg.model.dtype, enable_lora=True, max_lora_rank=cfg.backend.max_lora_rank,
        max_loras=cfg.backend.max_loras, gpu_memory_utilization=0.85, seed=11, trust_remote_code=False,
        max_model_len=512)  # a GPU: a share of its memory
    assert type(llm.kwargs["max_model_len"]) is int and backend.batch_size == cfg.backend.batch_size


def test_on_cpu_the_engine_gets_a_kv_cache_of_its_own_and_no_chunked_prefill(monkeypatch, head32_model_dir):
    """vLLM's CPU build reads gpu_memory_utilization as a share of the RAM it reserves at start (0.85 refuses to
    start beside other work), and fails seeded sampling on a chunked prefill."""
    install(monkeypatch, cpu=True)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    _, _, llm = build_from_config(head32_model_dir, [])
    assert "gpu_memory_utilization" not in llm.kwargs
    assert (llm.kwargs["kv_cache_memory_bytes"], llm.kwargs["enable_chunked_prefill"]) == (CPU_KV_CACHE_BYTES, False)
    # vLLM's own variable wins where set; the user's settings win over mafl's defaults
    install(monkeypatch, cpu=True)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    _, _, llm = build_from_config(head32_model_dir, [])
    assert "kv_cache_memory_bytes" not in llm.kwargs and "gpu_memory_utilization" not in llm.kwargs
    install(monkeypatch, cpu=True)
    _, _, llm = build_from_config(head32_model_dir, ["backend.kv_cache_memory_bytes=1000000",
                                                   "backend.gpu_memory_utilization=0.3",
                                                   "+backend.engine_kwargs.enable_chunked_prefill=true"])
    assert (llm.kwargs["kv_cache_memory_bytes"], llm.kwargs["gpu_memory_utilization"]) == (1000000, 0.3)
    assert llm.kwargs["enable_chunked_prefill"] is True


def test_on_cpu_an_engine_step_may_take_longer_than_vllms_five_minutes(monkeypatch, head32_model_dir):
    monkeypatch.delenv("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", raising=False)
    install(monkeypatch, cpu=True)
    (llm,) = [VLLMBackend(str(head32_model_dir)).llm]
    assert int(llm.environ["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"]) >= 3600
    assert "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS" not in os.environ  # only the engine's processes get it
    monkeypatch.setenv("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "50")  # the user's own wins
    assert VLLMBackend(str(head32_model_dir)).llm.environ["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"] == "50"
    monkeypatch.delenv("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS")
    install(monkeypatch, cpu=False)  # a GPU keeps vLLM's
    assert "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS" not in VLLMBackend(str(head32_model_dir)).llm.environ


def test_on_cpu_a_model_whose_heads_vllm_cannot_serve_is_refused_in_one_line(monkeypatch, tiny_model_dir,
                                                                             head32_model_dir):
    install(monkeypatch, cpu=True)
    with pytest.raises(ConfigError, match=r"^backend.name: vllm on CPU serves attention heads of size 32, 64, .*"
                                          r"has heads of 16: use backend=hf$"):
        VLLMBackend(str(tiny_model_dir))  # hidden 64, 4 heads
    assert FakeLLM.created == []
    VLLMBackend(str(head32_model_dir))
    install(monkeypatch, cpu=False)
    VLLMBackend(str(tiny_model_dir))  # a GPU serves them


def test_memory_keys_may_change_on_resume():
    assert {"gpu_memory_utilization", "kv_cache_memory_bytes"} <= set(VLLMBackend.operational_keys)


# -- generation --------------------------------------------------------------------------------------------------
def test_engine_calls_keep_the_base_model_apart_and_cut_by_size():
    assert engine_calls([None, "a", None, "b", "a"], 10) == [[0, 2], [1, 3, 4]]
    assert engine_calls(["a", "b", "c", None], 2) == [[3], [0, 1], [2]]
    assert engine_calls([None] * 3, 2) == [[0, 1], [2]] and engine_calls([], 4) == []


def expected_text(tokenizer, prompt_ids, lora) -> str:
    generated = fake_ids(prompt_ids, lora, FakeLLM.length)[:-1]  # the eos replaces the last one
    return tokenizer.decode(generated, skip_special_tokens=True).strip()


@pytest.mark.parametrize("cpu", [False, True])
def test_base_and_adapter_requests_never_share_an_engine_call(monkeypatch, head32_model_dir, tokenizer, tmp_path, cpu):
    """vLLM 0.32 on CPU gives the base model's requests of a mixed batch the last adapter's weights (the fake does
    too): mafl sends them in calls of their own, so a base row equals the same request's row in a base-only call."""
    install(monkeypatch, cpu=cpu)
    backend = VLLMBackend(str(head32_model_dir), dtype="float32")
    folders = {"generator_0": adapter_dir(tmp_path, "g0"), "critic_1": adapter_dir(tmp_path, "c1")}
    for name, folder in folders.items():
        backend.load_adapter(name, str(folder))
    names = [None, "generator_0", "critic_1", "generator_0", None]
    reqs = [GenerationRequest(msgs(q), adapter=a, sampling=T1) for q, a in zip(QUESTIONS, names)]
    completions = backend.generate(reqs)
    base_call, adapter_call = backend.llm.calls
    assert base_call["loras"] == [None, None]
    assert [lora.lora_name.rsplit("-", 1)[0] for lora in adapter_call["loras"]] == [a for a in names if a]
    for lora, name in zip(adapter_call["loras"], [a for a in names if a]):
        assert lora.lora_path == str(folders[name].resolve())
    loras = adapter_call["loras"]
    assert loras[0] is loras[2] and loras[0].lora_int_id != loras[1].lora_int_id
    # in the order of the requests, and a request's seed is its place in the whole call
    routes = {0: None, 4: None, 1: loras[0], 2: loras[1], 3: loras[2]}
    expected = [expected_text(tokenizer, chat_ids(tokenizer, msgs(q)), routes[i]) for i, q in enumerate(QUESTIONS)]
    assert [c.text for c in completions] == expected and len(set(expected)) == len(expected)
    assert [p.kwargs["seed"] for p in base_call["params"]] == [request_seed(T1.seed, i) for i in (0, 4)]
    assert [p.kwargs["seed"] for p in adapter_call["params"]] == [request_seed(T1.seed, i) for i in (1, 2, 3)]
    base_only = backend.generate([reqs[0], reqs[4]])
    assert [c.text for c in base_only] == [completions[0].text, completions[4].text]


def test_the_fake_engine_swaps_a_mixed_batchs_base_rows_as_vllm_does(fake_vllm, tiny_model_dir, tmp_path):
    """The check above can fail: handed one mixed call, the base row gets the adapter's tokens."""
    backend = VLLMBackend(str(tiny_model_dir))
    backend.load_adapter("generator_0", str(adapter_dir(tmp_path, "g0")))
    prompt = {"prompt_token_ids": backend.prompt_ids(msgs(QUESTIONS[0]))}
    params = backend.sampling_params(T1, 0)
    mixed = backend.llm.generate([prompt, prompt], [params] * 2, lora_request=[None, backend._route("generator_0")])
    alone = backend.llm.generate([prompt], [params], lora_request=[None])
    assert mixed[0].outputs[0].token_ids == mixed[1].outputs[0].token_ids != alone[0].outputs[0].token_ids


def test_text_is_decoded_from_the_generated_token_ids(backend, tokenizer):
    """The engine's own text is not used (vLLM's holds back an incomplete UTF-8 character): the text is the
    generated ids before the eos, decoded as the transformers backend decodes them (``chat.completion``)."""
    (c,) = backend.generate([GenerationRequest(msgs(QUESTIONS[1]), sampling=T1)])
    ids = fake_ids(chat_ids(tokenizer, msgs(QUESTIONS[1])), None, FakeLLM.length)
    ids[-1] = tokenizer.eos_token_id
    assert c == chat.completion(tokenizer, ids, {tokenizer.eos_token_id})
    assert c.text == tokenizer.decode(ids[:-1], skip_special_tokens=True).strip() and c.text
    assert backend.llm.calls[0]["params"][0].kwargs["detokenize"] is False


def test_completion_decodes_up_to_the_first_eos(tokenizer):
    eos = tokenizer.eos_token_id
    hello = tokenizer("The answer is 7.", add_special_tokens=False)["input_ids"]
    assert chat.completion(tokenizer, hello + [eos, 11, 12], {eos}).text == "The answer is 7."
    assert chat.completion(tokenizer, hello + [eos, 11, 12], {eos}).num_tokens == len(hello) + 1
    cut = chat.completion(tokenizer, hello, {eos})
    assert (cut.text, cut.num_tokens, cut.finished) == ("The answer is 7.", len(hello), False)


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
                             stop_token_ids=eos, detokenize=False)
    assert params[2] == dict(temperature=0.0, top_p=1.0, top_k=-1, max_tokens=3, seed=request_seed(7, 2),
                             stop_token_ids=eos, detokenize=False)
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
    assert (done.num_tokens, done.finished) == (FakeLLM.length, True)


def test_batch_size_cuts_engine_calls_without_changing_results(fake_vllm, tiny_model_dir):
    reqs = [GenerationRequest(msgs(q), sampling=T1) for q in QUESTIONS]
    whole = VLLMBackend(str(tiny_model_dir), batch_size=100)
    cut = VLLMBackend(str(tiny_model_dir), batch_size=2)
    assert whole.generate(reqs) == cut.generate(reqs)
    assert [len(c["prompts"]) for c in cut.llm.calls] == [2, 2, 1]
    assert [p.kwargs["seed"] for c in cut.llm.calls for p in c["params"]] == \
        [p.kwargs["seed"] for p in whole.llm.calls[0]["params"]]


# -- likelihood --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cpu", [False, True])
def test_score_sums_exactly_the_response_tokens_prompt_logprobs(monkeypatch, head32_model_dir, tokenizer, tmp_path,
                                                                cpu):
    """On a GPU one engine call for the base model's requests and one for the adapters'; on CPU one call per request
    (vLLM 0.32's CPU build fails on several requests with prompt logprobs under LoRA: so does the fake)."""
    install(monkeypatch, cpu=cpu)
    backend = VLLMBackend(str(head32_model_dir))
    backend.load_adapter("generator_1", str(adapter_dir(tmp_path, "g1")))
    reqs = [ScoringRequest(msgs(q), response=f"The answer is {i}.", adapter=a)
            for i, q in enumerate(QUESTIONS[:3]) for a in (None, "generator_1")]
    scores = backend.score(reqs)
    calls = backend.llm.calls
    assert [len(c["prompts"]) for c in calls] == ([1] * 6 if cpu else [3, 3])
    assert [c["loras"][0] is None for c in calls] == ([True, True, True, False, False, False] if cpu else [True, False])
    p0 = calls[0]["params"][0].kwargs
    assert p0["max_tokens"] == 1 and p0["prompt_logprobs"] >= 0 and p0["temperature"] == 1.0 and p0["top_k"] == -1
    order = [0, 2, 4, 1, 3, 5]  # the calls' requests: the base model's, then the adapter's
    loras = [lora for c in calls for lora in c["loras"]]
    for k, (i, lora) in enumerate(zip(order, loras)):
        req, score = reqs[i], scores[i]
        prompt = chat_ids(tokenizer, req.messages)
        response = tokenizer(req.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = prompt + response
        assert [p["prompt_token_ids"] for c in calls for p in c["prompts"]][k] == ids
        expected = sum(fake_logprob(j, ids[j], lora) for j in range(len(prompt), len(ids)))
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
