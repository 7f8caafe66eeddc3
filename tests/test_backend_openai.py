"""backend=openai against a real ``mafl serve`` subprocess on 127.0.0.1: the backend contract (completions and
scores equal to the in-process transformers backend's, adapters by name, unknown adapters refused before any
request), adapters found or loaded at run time, API model ids, and one-line errors."""
from __future__ import annotations

import json
import urllib.request

import pytest

from mafl.backends.base import GenerationRequest, Sampling, ScoringRequest, ScoringUnavailable
from mafl.errors import ConfigError, RunError
from helpers import one_torch_thread
from serving import QUESTION, make_adapters, mafl_serve

pytest.importorskip("openai")
pytest.importorskip("fastapi")

@pytest.fixture(scope="module")
def weights(talking_model_dir, tmp_path_factory):
    return make_adapters(str(talking_model_dir), ["generator_0", "critic_0"], tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def server(talking_model_dir, weights, tmp_path_factory):
    """mafl serve with the base model only: the backend loads adapters at run time."""
    with mafl_serve(["--model", str(talking_model_dir)], tmp_path_factory.mktemp("serve") / "serve.log") as s:
        yield s


def served_models(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/models") as r:
        return json.loads(r.read())["data"]


def requests_of(adapters):
    prompts = [[{"role": "user", "content": QUESTION.replace("3+4", f"{a}+4")}] for a in range(3)]
    return [GenerationRequest(p, adapter=a, sampling=Sampling(temperature=0.0, max_new_tokens=12, seed=i))
            for i, (p, a) in enumerate((p, a) for p in prompts for a in adapters)]


@pytest.fixture
def pair(talking_model_dir, server, weights):
    """The in-process transformers backend and backend=openai over mafl serve, holding the same adapters."""
    from mafl.backends.hf import HFBackend
    from mafl.backends.openai_api import OpenAIBackend

    hf = HFBackend(str(talking_model_dir))
    api = OpenAIBackend(str(talking_model_dir), base_url=server.url, max_retries=1, timeout=60)
    for name, path in weights.items():
        hf.load_adapter(name, path)
        api.load_adapter(name, path)
    with one_torch_thread():  # the server's one thread
        yield hf, api
    api.close()


def test_greedy_completions_equal_the_in_process_backend(pair):
    hf, api = pair
    requests = requests_of([None, "generator_0", "critic_0"])
    want, got = hf.generate(requests), api.generate(requests)
    assert got == want
    assert len({c.text for c in got}) > 3  # the models and prompts do answer differently
    rows = api.usage.to_json()["rows"]
    assert {r["model"] for r in rows} == {"base", "generator_0", "critic_0"}
    assert sum(r["requests"] for r in rows) == len(requests)
    assert sum(r["completion_tokens"] for r in rows) == sum(c.num_tokens for c in want)


def test_scores_equal_the_in_process_backend(pair):
    hf, api = pair
    requests = [ScoringRequest([{"role": "user", "content": QUESTION}], response=text, adapter=a)
                for text in ("4*5=20. The answer is -27.", "12") for a in (None, "generator_0", "critic_0")]
    want, got = hf.score(requests), api.score(requests)
    assert [s.num_tokens for s in got] == [s.num_tokens for s in want]
    assert [s.logprob for s in got] == pytest.approx([s.logprob for s in want], rel=1e-5)
    assert len({round(s.logprob, 3) for s in got}) == len(got)


def test_an_unknown_adapter_is_refused_before_any_request(pair):
    _, api = pair
    with pytest.raises(KeyError, match="critic_7"):
        api.generate(requests_of([None, "critic_7"]))
    assert api.usage.to_json()["total"]["requests"] == 0


def test_adapters_the_server_lists_are_used_not_loaded_again(talking_model_dir, weights, tmp_path):
    from mafl.backends.openai_api import OpenAIBackend

    folder = tmp_path / "models"
    folder.mkdir()
    for name, path in weights.items():
        (folder / name).symlink_to(path)
    with mafl_serve([str(folder), "--model", str(talking_model_dir)], tmp_path / "serve.log") as s:
        before = served_models(s.url)
        api = OpenAIBackend(str(talking_model_dir), base_url=s.url)
        api.load_adapter("generator_0", str(folder / "generator_0"))
        assert api.served("generator_0") == "generator_0"
        assert served_models(s.url) == before
        api.load_adapter("critic_0", str(tmp_path / "models" / ".." / "models" / "critic_0"))  # the same folder
        assert api.served("critic_0") == "critic_0"
        api.close()


def test_loading_at_run_time_is_done_once_per_folder(server, talking_model_dir, weights):
    from mafl.backends.openai_api import OpenAIBackend

    first = OpenAIBackend(str(talking_model_dir), base_url=server.url)
    first.load_adapter("generator_0", weights["generator_0"])
    count = len(served_models(server.url))
    again = OpenAIBackend(str(talking_model_dir), base_url=server.url)  # a resumed run: the server kept it
    again.load_adapter("generator_0", weights["generator_0"])
    assert again.served("generator_0") == first.served("generator_0")
    assert len(served_models(server.url)) == count
    first.close(), again.close()


def test_an_api_model_folder_names_its_model_and_a_failed_request_is_one_line(server, talking_model_dir, tmp_path):
    from mafl.backends.openai_api import API_MODEL_FILE, OpenAIBackend

    (tmp_path / "generator_0").mkdir()
    (tmp_path / "generator_0" / API_MODEL_FILE).write_text(json.dumps({"model": "ft:tiny:mafl::abc"}))
    api = OpenAIBackend(str(talking_model_dir), base_url=server.url, max_retries=0)
    api.load_adapter("generator_0", str(tmp_path / "generator_0"))
    assert api.served("generator_0") == "ft:tiny:mafl::abc"
    with pytest.raises(RunError) as e:
        api.generate(requests_of(["generator_0"]))
    message = str(e.value)
    assert "\n" not in message and server.url in message and " 404 " in message and "ft:tiny:mafl::abc" in message
    api.close()


def test_a_whole_model_folder_is_refused(server, talking_model_dir):
    from mafl.backends.openai_api import OpenAIBackend

    api = OpenAIBackend(str(talking_model_dir), base_url=server.url)
    with pytest.raises(NotImplementedError, match="backend=hf"):
        api.load_adapter("critic_0", str(talking_model_dir))
    api.close()


def test_scoring_without_a_tokenizer_is_unavailable_with_the_reason(server, talking_model_dir):
    from mafl.backends.openai_api import OpenAIBackend

    api = OpenAIBackend("some-api-model", base_url=server.url, base_model=str(talking_model_dir))
    assert api.tokenizer is None
    assert api.generate(requests_of([None]))[0].text  # generation needs no tokenizer
    with pytest.raises(ScoringUnavailable, match="no tokenizer"):
        api.score([ScoringRequest([{"role": "user", "content": QUESTION}], response="12")])
    api.close()


def test_no_server_is_a_one_line_error_naming_it(talking_model_dir):
    from mafl.backends.openai_api import OpenAIBackend
    from serving import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    api = OpenAIBackend(str(talking_model_dir), base_url=url, max_retries=1, timeout=5)
    with pytest.raises(RunError) as e:
        api.generate(requests_of([None]))
    assert "\n" not in str(e.value) and url in str(e.value) and "after 1 retries" in str(e.value)
    api.close()


def test_the_config_takes_no_api_key_and_checks_its_bounds():
    from mafl.backends import BackendSettings

    with pytest.raises(ConfigError, match=r"^backend.api_key: .*api_key_env"):
        BackendSettings.from_cfg({"name": "openai", "api_key": "sk-123"})
    with pytest.raises(ConfigError, match=r"^backend.max_concurrency:"):
        BackendSettings.from_cfg({"name": "openai", "max_concurrency": 0})
    assert BackendSettings.from_cfg({"name": "openai", "max_concurrency": 4}).options == {"max_concurrency": 4}
