"""Likelihood metrics that a backend cannot measure (a server without prompt log-probabilities): reported as
unavailable with the reason, in results.json and the report, while every other metric is measured."""
from __future__ import annotations

import json

import pytest

from helpers import ScriptedBackend
from mafl.backends.base import ScoringRequest, ScoringUnavailable
from mafl.metrics.results import Results
from serving import QUESTION, AppThread


class NoScores(ScriptedBackend):
    def score(self, requests):
        raise ScoringUnavailable("http://x/v1 returns no prompt log-probabilities")


def test_the_likelihood_metrics_are_unavailable_and_the_others_measured(tiny_model_dir):
    from mafl.debate.engine import debate_chunk
    from mafl.tasks.prompts import Prompts
    from mafl.debate.settings import DebateSettings
    from mafl.debate.society import Society
    from mafl.metrics.iteration import compute_iteration_metrics
    from mafl.tasks import get_task, load_splits
    from helpers import compose_cfg, question_numbers

    cfg = compose_cfg(["debate.rounds=2", "dataset.n_eval=4", "dataset.n_train=1"])
    task = get_task("arithmetic")
    problems = load_splits(cfg.dataset)[1]
    backend = NoScores(lambda r: f"The answer is {sum(question_numbers(r.messages[0]['content']))}.")
    backend.load_adapter("generator_0", "x")
    transcripts = debate_chunk(backend, task, problems, Society(agents=2), DebateSettings.from_cfg(
        {**cfg.debate, "agents": 2}), Prompts.from_cfg(cfg.dataset.prompts), seed=0)
    unavailable = {}
    records = compute_iteration_metrics(transcripts, task, backend=backend, metrics_cfg={
        **cfg.metrics, "embedding_model": None, "bootstrap_samples": 10}, iteration=0, split="eval", seed=0,
        unavailable=unavailable)
    names = {r.metric for r in records}
    assert "accuracy/debate" in names and "consensus" in names
    assert not names & {"kl/agents", "kl/base", "nll"}
    assert unavailable == dict.fromkeys(("kl/agents", "kl/base", "nll"), "http://x/v1 returns no prompt log-probabilities")


def test_the_report_says_what_was_unavailable_and_why(tmp_path):
    from mafl.reporting.report import build_report
    from mafl.metrics.results import write_results

    results = Results.from_config({"method": {"name": "debate"}, "dataset": {"name": "gsm8k"}, "model": {"name": "m"}},
                                  unavailable={"kl/agents": "no logprobs", "nll": "no logprobs"})
    results.path = write_results(tmp_path, results)
    assert json.loads((tmp_path / "results.json").read_text())["unavailable"] == {"kl/agents": "no logprobs",
                                                                                  "nll": "no logprobs"}
    assert f"- {tmp_path}: unavailable: kl/agents, nll (no logprobs)" in build_report([results])


def test_a_server_without_prompt_logprobs_makes_scoring_unavailable(tiny_model_dir):
    """A server that answers completions as OpenAI does (no prompt log-probabilities): the remote is a stub here."""
    from fastapi import FastAPI

    from mafl.backends.openai_api import OpenAIBackend

    app = FastAPI()

    @app.post("/v1/completions")
    async def completions():
        return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "text": "x", "logprobs": None, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}

    with AppThread(app) as server:
        api = OpenAIBackend(str(tiny_model_dir), base_url=server.url)
        request = ScoringRequest([{"role": "user", "content": QUESTION}], response="12")
        for _ in range(2):  # the reason is kept: the second call asks the server nothing
            with pytest.raises(ScoringUnavailable, match="returns no prompt log-probabilities"):
                api.score([request])
        assert api.usage.to_json()["total"]["requests"] == 0
        api.close()
