"""``mafl serve`` as a real subprocess on 127.0.0.1: what it serves from a run folder, its chat completions (n, seed,
stop, usage, eos) against the in-process transformers backend, loading adapters at run time, API keys, errors in
OpenAI's shape, the ``vllm serve`` command it prints, and the fault-injection spec of the client tests."""
from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from helpers import compose_cfg, one_torch_thread, subprocess_env
from serving import QUESTION, api_call, make_adapters, mafl_serve

pytest.importorskip("openai")
pytest.importorskip("fastapi")

MESSAGES = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def run_folder(talking_model_dir, tmp_path_factory):
    """A run folder as the loop leaves it: its config, and the models of iteration 1."""
    run_dir = tmp_path_factory.mktemp("served") / "run"
    cfg = compose_cfg([f"model.path={talking_model_dir}", f"run_dir={run_dir}"])
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    make_adapters(str(talking_model_dir), ["generator_0", "critic_0"], run_dir / "iter_1" / "models")
    (run_dir / "iter_1" / "models" / "generator_0.json").write_text("{}")
    return run_dir


@pytest.fixture(scope="module")
def server(run_folder, tmp_path_factory):
    with mafl_serve([str(run_folder), "--api-key-env", "MAFL_TEST_KEY"], tmp_path_factory.mktemp("log") / "serve.log",
                    env={"MAFL_TEST_KEY": "sk-test-serve"}) as s:
        yield s


def call(server, path: str, body: dict | None = None, key: str | None = "sk-test-serve") -> tuple[int, dict | str]:
    return api_call(server.url, path, body, key=key)


def test_a_run_folder_serves_its_base_model_and_every_model_of_every_iteration(server, run_folder, talking_model_dir):
    status, models = call(server, "/models")
    assert status == 200
    rows = {m["id"]: m for m in models["data"]}
    assert set(rows) == {str(talking_model_dir), "iter_1/generator_0", "iter_1/critic_0"}
    assert rows["iter_1/critic_0"]["root"] == str(run_folder / "iter_1" / "models" / "critic_0")
    assert rows["iter_1/critic_0"]["parent"] == str(talking_model_dir)


def test_chat_completions_answer_as_the_in_process_backend(server, run_folder, talking_model_dir):
    import openai

    from mafl.backends import chat
    from mafl.backends.base import GenerationRequest, Sampling
    from mafl.backends.hf import HFBackend

    hf = HFBackend(str(talking_model_dir))
    hf.load_adapter("critic_0", str(run_folder / "iter_1" / "models" / "critic_0"))
    client = openai.OpenAI(base_url=server.url, api_key="sk-test-serve")
    for model, adapter in ((str(talking_model_dir), None), ("iter_1/critic_0", "critic_0")):
        with one_torch_thread():  # the server's one thread
            want = hf.generate([GenerationRequest(MESSAGES, adapter=adapter,
                                                  sampling=Sampling(temperature=0, max_new_tokens=10))])[0]
        got = client.chat.completions.create(model=model, messages=MESSAGES, temperature=0, max_tokens=10, n=2)
        assert [c.message.content for c in got.choices] == [want.text] * 2
        assert got.choices[0].finish_reason == ("stop" if want.finished else "length")
        assert got.usage.prompt_tokens == len(chat.prompt_ids(hf.tokenizer, MESSAGES))
        assert got.usage.completion_tokens == 2 * want.num_tokens
    sampled = [client.chat.completions.create(model="iter_1/critic_0", messages=MESSAGES, max_tokens=10, seed=s)
               .choices[0].message.content for s in (1, 1, 2)]
    assert sampled[0] == sampled[1]  # the same seed, alone in its batch: the same answer
    text = want.text
    assert len(text) > 3
    cut = client.chat.completions.create(model="iter_1/critic_0", messages=MESSAGES, temperature=0,
                                         max_tokens=10, stop=[text[2:4]])
    assert cut.choices[0].message.content == text[:text.find(text[2:4])].rstrip() and cut.choices[0].finish_reason == "stop"


def test_adapters_load_and_unload_at_run_time(server, run_folder):
    path = str(run_folder / "iter_1" / "models" / "generator_0")
    assert call(server, "/load_lora_adapter", {"lora_name": "extra", "lora_path": path})[0] == 200
    assert call(server, "/load_lora_adapter", {"lora_name": "extra", "lora_path": path})[0] == 400
    assert "extra" in {m["id"] for m in call(server, "/models")[1]["data"]}
    status, out = call(server, "/chat/completions", {"model": "extra", "messages": MESSAGES, "max_tokens": 3})
    assert status == 200 and out["choices"][0]["message"]["role"] == "assistant"
    assert call(server, "/unload_lora_adapter", {"lora_name": "extra"})[0] == 200
    status, out = call(server, "/chat/completions", {"model": "extra", "messages": MESSAGES})
    assert status == 404 and out["error"]["message"] == "The model `extra` does not exist."


def test_errors_have_openai_shape_and_a_key_is_required(server, talking_model_dir):
    status, out = call(server, "/models", key=None)
    assert status == 401 and out["error"]["type"] == "invalid_api_key"
    assert call(server, "/models", key="sk-wrong")[0] == 401
    status, out = call(server, "/chat/completions", {"model": str(talking_model_dir), "messages": MESSAGES,
                                                     "stream": True})
    assert status == 400 and out["error"]["message"].startswith("stream:")
    status, out = call(server, "/chat/completions", {"model": str(talking_model_dir), "messages": MESSAGES,
                                                     "max_tokens": 0})
    assert status == 400 and out["error"]["message"].startswith("max_tokens:")
    status, out = call(server, "/completions", {"model": str(talking_model_dir), "prompt": [1, 10**9],
                                                "prompt_logprobs": 1})
    assert status == 400


def test_completions_generate_text_as_chat_completions_do(server, talking_model_dir):
    """/v1/completions continues a prompt (token ids, or a text tokenized as it is): the chat prompt's token ids
    give the chat completion's answer; a text prompt gets its own continuation, with usage and finish_reason."""
    from mafl.backends import chat
    from mafl.backends.hf import HFBackend

    base = str(talking_model_dir)
    ids = chat.prompt_ids(HFBackend(base).tokenizer, MESSAGES)
    want = call(server, "/chat/completions", {"model": base, "messages": MESSAGES, "temperature": 0,
                                              "max_tokens": 10})[1]["choices"][0]
    status, out = call(server, "/completions", {"model": base, "prompt": ids, "temperature": 0, "max_tokens": 10})
    assert status == 200 and out["object"] == "text_completion"
    assert out["choices"][0]["text"] == want["message"]["content"]
    assert out["choices"][0]["finish_reason"] == want["finish_reason"]
    assert out["usage"]["prompt_tokens"] == len(ids)
    status, out = call(server, "/completions", {"model": base, "prompt": "4*5=20. 7*8=", "temperature": 0,
                                                "max_tokens": 5, "n": 2})
    assert status == 200 and len(out["choices"]) == 2 and out["choices"][0]["text"] == out["choices"][1]["text"]
    assert 0 < out["usage"]["completion_tokens"] <= 10


def test_prompt_logprobs_are_the_in_process_backend_s(server, talking_model_dir):
    from mafl.backends.hf import HFBackend

    hf = HFBackend(str(talking_model_dir))
    ids = hf.tokenizer("4*5=20. 7*8=56.", add_special_tokens=False)["input_ids"]
    status, out = call(server, "/completions", {"model": str(talking_model_dir), "prompt": ids, "prompt_logprobs": 1})
    assert status == 200
    entries = out["choices"][0]["prompt_logprobs"]
    with one_torch_thread():  # the server's one thread: the same ranks among near-ties
        want, ranks = hf.token_logprobs([ids])[0]
    assert entries[0] is None and len(entries) == len(ids)
    assert [e[str(t)]["logprob"] for e, t in zip(entries[1:], ids[1:])] == pytest.approx(want[1:], rel=1e-5)
    assert [e[str(t)]["rank"] for e, t in zip(entries[1:], ids[1:])] == ranks[1:]


def test_the_vllm_command_serves_the_same_names(run_folder, talking_model_dir):
    out = subprocess.run([sys.executable, "-m", "mafl", "serve", str(run_folder), "--vllm-command"],
                         capture_output=True, text=True, env=subprocess_env(), check=True).stdout
    assert out.startswith(f"vllm serve {talking_model_dir} --enable-lora --max-lora-rank 4 ")
    for name in ("generator_0", "critic_0"):
        assert f"iter_1/{name}={run_folder / 'iter_1' / 'models' / name}" in out


def test_the_fault_spec_is_checked():
    from mafl.serve.faults import FaultSpec

    assert FaultSpec.parse("429=0.1,500=0.2,drop=0.05,seed=3") == FaultSpec({"429": 0.1, "500": 0.2, "drop": 0.05}, 3)
    for bad in ("404=0.1", "429=x", "429=0.7,500=0.6", "drop=2"):
        with pytest.raises(ValueError, match="^--inject-faults"):
            FaultSpec.parse(bad)
