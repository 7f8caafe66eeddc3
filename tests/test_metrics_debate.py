"""Accuracy, consensus, KL/NLL and the whole iteration's metrics on hand-made debates (fake task and backend)."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import pytest

from mafl.backends.base import Score
from mafl.debate.transcript import Transcript, Turn
from mafl.metrics import compute_iteration_metrics
from mafl.metrics.accuracy import accuracy_records
from mafl.metrics.diversity import consensus_records, diversity_subset, pairwise_dissimilarity
from mafl.metrics.likelihood import likelihood_records
from mafl.tasks.base import Problem, Task
from mafl.tasks.vote import majority_vote


class NumberTask(Task):
    name = "numbers"

    def extract_answer(self, response):
        return response.split()[-1] if response.split() else None

    def is_equivalent(self, pred, gold):
        try:
            return pred is not None and float(pred) == float(gold)
        except (TypeError, ValueError):
            return False

    def gold_answer(self, row):
        return row["answer"]


def make_transcript(pid: str, gold: str, rounds_answers: list[list[str | None]], responses=None, models=None):
    """One debate: ``rounds_answers[r][n]`` is agent n's answer in round r; the final answer is the last
    round's majority."""
    task = NumberTask()
    rounds = []
    for r, answers in enumerate(rounds_answers):
        turns = []
        for n, a in enumerate(answers):
            model = models[r][n] if models else f"{'generator' if r == 0 else 'critic'}_{n}"
            text = responses[r][n] if responses else f"the answer is {a}"
            turns.append(Turn(agent=n, round=r, model=model, messages=[{"role": "user", "content": f"q{pid}"}],
                              response=text, answer=a, correct=task.is_equivalent(a, gold),
                              num_tokens=len(text.split())))
        rounds.append(turns)
    vote = majority_vote(task, rounds_answers[-1], tie_seed=0)
    final = vote.winner
    return Transcript(problem=Problem(pid, f"q{pid}", gold), rounds=rounds, final_answer=final, votes=vote.clusters,
                      correct=task.is_equivalent(final, gold))


@pytest.fixture
def debates():
    return [
        make_transcript("a", "3", [["3", "3", "5"], ["3", "3", "3"]]),   # r1 majority right, all right at the end
        make_transcript("b", "7", [["1", "7", "1"], ["1", "1", "7"]]),   # a wrong r1 majority stays wrong
        make_transcript("c", "4", [["4", "4", "4"], ["4", "4", "9"]]),
        make_transcript("d", "8", [["2", "2", "8"], ["8", "8", None]]),  # debate fixes a wrong r1 majority
    ]


def se(values):
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) / math.sqrt(len(values))


def by_key(records):
    return {(r.metric, r.agent, r.other): r for r in records}


def test_accuracy_records(debates):
    recs = by_key(accuracy_records(debates, NumberTask(), iteration=1, split="eval", samples=100, seed=0))
    debate = [1.0, 0.0, 1.0, 1.0]
    assert recs[("accuracy/debate", None, None)].value == pytest.approx(0.75)
    assert recs[("accuracy/debate", None, None)].stderr == pytest.approx(se(debate))
    assert recs[("accuracy/round1_majority", None, None)].value == pytest.approx(2 / 4)  # a, c
    # agent 2 alone: round 1 right on a? no (5); b no (1); c yes; d yes -> 2/4; final: a yes, b yes, c no, d no
    assert recs[("accuracy/agent_round1", 2, None)].value == pytest.approx(2 / 4)
    assert recs[("accuracy/agent_final", 2, None)].value == pytest.approx(2 / 4)
    assert recs[("accuracy/agent_final", 0, None)].value == pytest.approx(3 / 4)
    shares = [3 / 3, 1 / 3, 2 / 3, 2 / 3]
    assert recs[("accuracy/agent_final", None, None)].value == pytest.approx(sum(shares) / 4)
    assert recs[("accuracy/agent_final", None, None)].stderr == pytest.approx(se(shares))
    assert all(r.n == 4 and r.iteration == 1 and r.split == "eval" for r in recs.values())


def test_consensus_records(debates):
    recs = by_key(consensus_records(debates, NumberTask(), iteration=0, split="eval", samples=100, seed=0))
    final = [3 / 3, 2 / 3, 2 / 3, 2 / 3]
    first = [2 / 3, 2 / 3, 3 / 3, 2 / 3]
    assert recs[("consensus", None, None)].value == pytest.approx(sum(final) / 4)
    assert recs[("consensus", None, None)].stderr == pytest.approx(se(final))
    assert recs[("consensus/round1", None, None)].value == pytest.approx(sum(first) / 4)
    single = [make_transcript("s", "1", [["1"]])]
    assert consensus_records(single, NumberTask(), iteration=0, split="eval", samples=10, seed=0) == []


@dataclass
class WordBackend:
    """A fake society: model m gives word w the probability ``dist[m][w]``, independently per word."""

    dist: dict
    loaded: tuple = ("generator_0", "generator_1", "generator_2", "critic_0", "critic_1", "critic_2")
    calls: int = 0

    def score(self, requests):
        self.calls += len(requests)
        out = []
        for r in requests:
            words = r.response.split()
            out.append(Score(sum(math.log(self.dist[r.adapter][w]) for w in words), len(words)))
        return out

    def adapters(self):
        return list(self.loaded)


def peaked(word, words=("w0", "w1", "w2", "w3"), p=0.7):
    return {w: p if w == word else (1 - p) / (len(words) - 1) for w in words}


def word_debates(n_problems=5, final_words=None):
    """Agent n says its favourite word ``w<n>`` in round 1 and ``final_words[n]`` in the last round."""
    final_words = final_words or ["w0", "w1", "w2"]
    return [
        make_transcript(str(p), "1", [["1"] * 3, ["1"] * 3],
                        responses=[[f"w{n} " * (3 + p) for n in range(3)], [f"{final_words[n]} " * 4 for n in range(3)]])
        for p in range(n_problems)
    ]


def test_kl_is_zero_for_identical_agents():
    same = peaked("w0")
    backend = WordBackend({None: same, **{f"generator_{n}": same for n in range(3)}})
    recs = by_key(likelihood_records(word_debates(), backend, iteration=1, split="eval", samples=50, seed=0))
    assert recs[("kl/agents", None, None)].value == pytest.approx(0.0, abs=1e-12)
    assert recs[("kl/agents", 0, 2)].value == pytest.approx(0.0, abs=1e-12)
    assert recs[("kl/base", None, None)].value == pytest.approx(0.0, abs=1e-12)


def test_kl_and_nll_of_different_agents_match_the_closed_form():
    uniform = {w: 0.25 for w in ("w0", "w1", "w2", "w3")}
    backend = WordBackend({None: uniform, **{f"generator_{n}": peaked(f"w{n}") for n in range(3)}})
    recs = by_key(likelihood_records(word_debates(), backend, iteration=1, split="eval", samples=50, seed=0))
    # agent i says w_i: log p_i = log .7, log p_j = log .1 per token
    for i in range(3):
        for j in range(3):
            if i != j:
                assert recs[("kl/agents", i, j)].value == pytest.approx(math.log(0.7 / 0.1))
        assert recs[("kl/base", i, None)].value == pytest.approx(math.log(0.7 / 0.25))
        assert recs[("nll", i, None)].value == pytest.approx(-math.log(0.7))
    mean = recs[("kl/agents", None, None)]
    assert mean.value == pytest.approx(math.log(7)) and mean.n == 5
    assert mean.ci_low == pytest.approx(math.log(7)) and mean.ci_high == pytest.approx(math.log(7))


def test_kl_of_the_final_round_uses_the_critics():
    uniform = {w: 0.25 for w in ("w0", "w1", "w2", "w3")}
    dist = {None: uniform, **{f"generator_{n}": peaked(f"w{n}") for n in range(3)},
            **{f"critic_{n}": peaked(f"w{(n + 1) % 4}") for n in range(3)}}
    debates = word_debates(final_words=["w1", "w2", "w3"])  # each critic says its own favourite word
    recs = by_key(likelihood_records(debates, WordBackend(dist), round_index=-1, suffix="_final",
                                     iteration=1, split="eval", samples=20, seed=0))
    assert recs[("nll_final", None, None)].value == pytest.approx(-math.log(0.7))  # under the generators: -log .1
    assert recs[("kl/agents_final", None, None)].value == pytest.approx(math.log(7))


def test_models_not_loaded_are_the_base_model_and_requests_are_deduplicated():
    backend = WordBackend({None: peaked("w0")}, loaded=())
    recs = by_key(likelihood_records(word_debates(n_problems=2), backend, iteration=0, split="eval", samples=20, seed=0))
    assert recs[("kl/agents", None, None)].value == 0.0
    assert backend.calls == 2 * 3  # each response scored once under the base model


def test_pairwise_dissimilarity():
    v = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert pairwise_dissimilarity(v[:2]) == pytest.approx(0.0)
    assert pairwise_dissimilarity(v) == pytest.approx((0 + 1 + 1) / 3)


def test_diversity_subset_is_deterministic_and_order_free():
    debates = word_debates(n_problems=6)
    shuffled = debates[:]
    random.Random(0).shuffle(shuffled)
    ids = [t.problem.id for t in diversity_subset(debates, 3)]
    assert ids == [t.problem.id for t in diversity_subset(shuffled, 3)]
    assert len(ids) == 3 and len(diversity_subset(debates, None)) == 6


def fake_embedder(texts):
    """Bag of words -> unit vectors."""
    vocab = ["w0", "w1", "w2", "w3"]
    v = np.array([[t.split().count(w) for w in vocab] for t in texts], dtype=float) + 1e-9
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# the two-round debates' transition: its flip cells and where its answers come from (mafl.metrics.dynamics)
DYNAMICS = {f"flips/round1-2/{c}" for c in ("right_right", "wrong_right", "right_wrong", "wrong_wrong")} | {
    f"moves/round1-2/{m}" for m in ("kept", "adopted", "new")} | {"consensus/round2"}
# (adopt_majority/round1-2 only where an agent faces a united majority of the others: none in word_debates)
# the failure measures of every round (mafl.metrics.failures) and the tokens generated (mafl.metrics.cutoff)
FAILURES = {"voted_out", "oracle/round1", "oracle/round2", "voted_out/round1", "voted_out/round2", "entropy/round1",
            "entropy/round2", "tokens/answers", "tokens/summaries", "tokens/total"}


def test_compute_iteration_metrics_lists_every_metric():
    uniform = {w: 0.25 for w in ("w0", "w1", "w2", "w3")}
    dist = {None: uniform, **{f"generator_{n}": peaked(f"w{n}") for n in range(3)},
            **{f"critic_{n}": peaked(f"w{n}") for n in range(3)}}
    cfg = {"diversity": True, "diversity_problems": 3, "diversity_rounds": ["first", "final"],
           "bootstrap_samples": 30}
    recs = compute_iteration_metrics(word_debates(), NumberTask(), backend=WordBackend(dist), metrics_cfg=cfg,
                                     iteration=2, split="eval", seed=0, embedder=fake_embedder)
    names = {r.metric for r in recs}
    assert names == {
        "accuracy/debate", "accuracy/round1_majority", "accuracy/agent_round1", "accuracy/agent_final",
        "consensus", "consensus/round1", "kl/agents", "kl/base", "nll", "embedding_dissimilarity",
        "kl/agents_final", "kl/base_final", "nll_final", "embedding_dissimilarity_final",
        "answers_per_problem", "cutoff/round1", "cutoff/round2", *DYNAMICS, *FAILURES,
    }
    keyed = by_key(recs)
    assert keyed[("accuracy/debate", None, None)].n == 5
    assert keyed[("kl/agents", None, None)].n == 3 and keyed[("embedding_dissimilarity", None, None)].n == 3
    assert keyed[("embedding_dissimilarity", None, None)].value == pytest.approx(1.0)  # orthogonal bags of words
    assert all(r.iteration == 2 and r.split == "eval" for r in recs)

    no_backend = {r.metric for r in compute_iteration_metrics(
        word_debates(), NumberTask(), metrics_cfg=cfg, iteration=2, split="eval", seed=0, embedder=fake_embedder)}
    assert not any(m.startswith(("kl", "nll")) for m in no_backend) and "embedding_dissimilarity" in no_backend
    off = {r.metric for r in compute_iteration_metrics(
        word_debates(), NumberTask(), metrics_cfg={**cfg, "diversity": False}, iteration=2, split="eval", seed=0)}
    assert off == {"accuracy/debate", "accuracy/round1_majority", "accuracy/agent_round1",
                   "accuracy/agent_final", "consensus", "consensus/round1", "answers_per_problem", "cutoff/round1",
                   "cutoff/round2", *DYNAMICS, *FAILURES}
    with pytest.raises(ValueError, match="diversity_rounds"):
        compute_iteration_metrics(word_debates(), NumberTask(), metrics_cfg={**cfg, "diversity_rounds": ["last"]},
                                  iteration=2, split="eval", seed=0, embedder=fake_embedder)
