"""``Score.token_logprobs`` (mafl/backends/base.py): every backend returns, beside a response's summed
log-probability, each of its tokens' (``chat.response_ids``: eos last), in order, summing to ``logprob`` (up to float32 rounding): the
transformers backend against one unbatched forward pass, the vLLM backend against its (fake) engine's prompt
logprobs, backend=openai against a real ``mafl serve`` on 127.0.0.1 and the transformers backend."""
from __future__ import annotations

import pytest
import torch

from mafl.backends import chat
from mafl.backends.base import ScoringRequest
from helpers import one_torch_thread
from serving import QUESTION, mafl_serve

RESPONSES = ("4*5=20. The answer is -27.", "12", "The answer is 12.")


def requests(adapter=None) -> list[ScoringRequest]:
    return [ScoringRequest([{"role": "user", "content": QUESTION.replace("3+4", f"{k}+4")}], response=r,
                           adapter=adapter) for k, r in enumerate(RESPONSES)]


def check_sums(scores) -> None:
    for s in scores:
        assert len(s.token_logprobs) == s.num_tokens
        assert sum(s.token_logprobs) == pytest.approx(s.logprob, abs=1e-4)  # float32 sums
        assert all(lp <= 0 for lp in s.token_logprobs)


def test_the_transformers_backend_gives_each_tokens_logprob_of_one_forward_pass(talking_model_dir):
    from mafl.backends.hf import HFBackend

    backend = HFBackend(str(talking_model_dir), batch_size=2)  # padded batches of 2 and 1
    reqs = requests()
    scores = backend.score(reqs)
    check_sums(scores)
    tok, model = backend.tokenizer, backend.base
    for req, score in zip(reqs, scores):
        prompt, resp = chat.prompt_ids(tok, req.messages), chat.response_ids(tok, req.response)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + resp])).logits[0].float(), -1)
        want = [float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(resp)]
        assert score.token_logprobs == pytest.approx(want, abs=1e-4)
    assert len({s.token_logprobs for s in scores}) == len(scores)


def test_the_vllm_backend_gives_each_tokens_prompt_logprob(monkeypatch, tiny_model_dir):
    from fake_vllm import fake_logprob, install

    from mafl.backends.vllm import VLLMBackend

    install(monkeypatch)
    backend = VLLMBackend(str(tiny_model_dir), dtype="float32")
    reqs = requests()
    scores = backend.score(reqs)
    check_sums(scores)
    tok = backend.tokenizer
    for req, score in zip(reqs, scores):
        prompt, resp = chat.prompt_ids(tok, req.messages), chat.response_ids(tok, req.response)
        ids = prompt + resp
        assert list(score.token_logprobs) == pytest.approx(
            [fake_logprob(k, ids[k], None) for k in range(len(prompt), len(ids))], abs=1e-12)


def test_backend_openai_over_mafl_serve_gives_the_transformers_backends_token_logprobs(talking_model_dir, tmp_path):
    pytest.importorskip("openai")
    pytest.importorskip("fastapi")
    from mafl.backends.hf import HFBackend
    from mafl.backends.openai_api import OpenAIBackend

    reqs = requests()
    with one_torch_thread():  # the server's one thread
        want = HFBackend(str(talking_model_dir)).score(reqs)
    with mafl_serve(["--model", str(talking_model_dir)], tmp_path / "serve.log") as server:
        api = OpenAIBackend(str(talking_model_dir), base_url=server.url, max_retries=1, timeout=60)
        try:
            got = api.score(reqs)
        finally:
            api.close()
    check_sums(got)
    for g, w in zip(got, want):
        assert list(g.token_logprobs) == pytest.approx(list(w.token_logprobs), rel=1e-4, abs=1e-5)
