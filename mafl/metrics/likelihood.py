"""Likelihood-based diversity of the society: KL between agents, KL against the base model, NLL.

For every problem and agent ``i`` of one round, agent ``i``'s response ``y_i`` to its prompt ``x_i`` is scored
(``backend.score``) under the model that spoke it, under every other agent's model of the same round, and under
the base model (adapter ``None``). With ``T_i`` the number of tokens of ``y_i`` and sums over problems::

    kl/agents[i, j] = sum(log p_i(y_i|x_i) - log p_j(y_i|x_i)) / sum(T_i)    # per-token Monte-Carlo KL(p_i||p_j)
    kl/base[i]      = sum(log p_i(y_i|x_i) - log p_base(y_i|x_i)) / sum(T_i)
    nll[i]          = -sum(log p_i(y_i|x_i)) / sum(T_i)

Records: ``kl/agents`` with ``agent=i, other=j`` for each ordered pair (the matrix, both directions) and with
``agent=None`` for its mean off the diagonal; ``kl/base`` and ``nll`` per agent and pooled over agents
(``agent=None``). These are ratios of sums, so their stderr and interval come from a bootstrap over problems.

Which turns: round 1, spoken by the generators (``generator_i``), is what the paper's KL figure compares; with
``final`` in ``metrics.diversity_rounds`` the last round, spoken by the critics, is scored too (names with the
suffix ``_final``). The model of a turn is ``turn.model``; a model the backend has not loaded (the untuned
society of iteration 0) is the base model. In a mixed society (``society.models``) each model is scored under its
own agent's base and tokenizer, and ``kl/base`` is against the speaking agent's own base.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mafl.backends.base import Backend, ScoringRequest
from mafl.debate.transcript import Transcript
from mafl.metrics.stats import MetricRecord, ratio_record, statistic_record

LIKELIHOOD_METRICS = ("kl/agents", "kl/base", "nll")


def score_all(backend: Backend, requests: list[ScoringRequest], *, chunk_size: int, desc: str) -> list:
    """``backend.score`` over ``requests`` in chunks, with a progress bar."""
    scores = []
    from mafl.progress import stage

    with stage(desc, total=len(requests), unit="response") as bar:
        for start in range(0, len(requests), chunk_size):
            chunk = requests[start : start + chunk_size]
            scores.extend(backend.score(chunk))
            bar.update(len(chunk))
    return scores


def score_round(
    transcripts: Sequence[Transcript], backend: Backend, *, round_index: int, chunk_size: int, desc: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-likelihoods of one round: ``logp[p, i, j]`` (agent i's response under agent j's model),
    ``base[p, i]`` (under the base model) and ``tokens[p, i]``. Identical requests are scored once."""
    loaded = set(backend.adapters())
    base_of = getattr(backend, "base_of", None)  # a mixed society's backend: each model's own base
    agents = min(len(t.rounds[round_index]) for t in transcripts)
    unique: dict[tuple, int] = {}
    requests: list[ScoringRequest] = []
    index = np.zeros((len(transcripts), agents, agents + 1), dtype=int)  # last column: the base model
    for p, t in enumerate(transcripts):
        turns = t.rounds[round_index][:agents]
        models = [u.model if u.model in loaded else None for u in turns]
        for i, u in enumerate(turns):
            for j, adapter in enumerate(models + [base_of(u.model) if base_of is not None else None]):
                key = (p, i, adapter)
                if key not in unique:
                    unique[key] = len(requests)
                    requests.append(ScoringRequest(messages=u.messages, response=u.response, adapter=adapter))
                index[p, i, j] = unique[key]
    scores = score_all(backend, requests, chunk_size=chunk_size, desc=desc)
    logprobs = np.array([s.logprob for s in scores], dtype=float)
    num_tokens = np.array([s.num_tokens for s in scores], dtype=float)
    lp = logprobs[index]
    own = np.array([[index[p, i, i] for i in range(agents)] for p in range(len(transcripts))], dtype=int)
    return lp[:, :, :agents], lp[:, :, agents], num_tokens[own]


def likelihood_records(
    transcripts: Sequence[Transcript], backend: Backend, *, round_index: int = 0, suffix: str = "",
    iteration: int, split: str, samples: int, seed: int, chunk_size: int = 64,
) -> list[MetricRecord]:
    """``kl/agents``, ``kl/base`` and ``nll`` (each name + ``suffix``) of round ``round_index``."""
    if not transcripts:
        return []
    desc = f"likelihoods {split} iteration {iteration}{suffix}"
    logp, base, tokens = score_round(transcripts, backend, round_index=round_index, chunk_size=chunk_size, desc=desc)
    if tokens.sum() <= 0:
        return []
    n_agents = logp.shape[1]
    own = logp[:, np.arange(n_agents), np.arange(n_agents)]  # [p, i]
    common = dict(iteration=iteration, split=split, samples=samples, seed=seed)
    records = [
        ratio_record(-own.sum(1), tokens.sum(1), metric="nll" + suffix, **common),
        ratio_record((own - base).sum(1), tokens.sum(1), metric="kl/base" + suffix, **common),
    ]
    for i in range(n_agents):
        if tokens[:, i].sum() <= 0:
            continue
        records.append(ratio_record(-own[:, i], tokens[:, i], metric="nll" + suffix, agent=i, **common))
        records.append(ratio_record(own[:, i] - base[:, i], tokens[:, i], metric="kl/base" + suffix, agent=i, **common))
        for j in range(n_agents):
            if j != i:
                records.append(ratio_record(own[:, i] - logp[:, i, j], tokens[:, i], metric="kl/agents" + suffix,
                                            agent=i, other=j, **common))
    pairs = [(i, j) for i in range(n_agents) for j in range(n_agents) if i != j and tokens[:, i].sum() > 0]
    if pairs:
        def off_diagonal_mean(idx: np.ndarray) -> float:
            return float(np.mean([
                (own[idx, i] - logp[idx, i, j]).sum() / tokens[idx, i].sum() if tokens[idx, i].sum() > 0 else np.nan
                for i, j in pairs
            ]))

        records.append(statistic_record(off_diagonal_mean, len(transcripts), metric="kl/agents" + suffix, **common))
    return records
