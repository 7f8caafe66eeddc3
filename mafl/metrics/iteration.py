"""All the metrics of one iteration on one split, from its debate transcripts.

Metric names (``MetricRecord.metric``); ``agent=None`` is the society, ``agent=n`` one agent:

==================================  =====================================================================
``accuracy/debate``                 the debate's final answer (majority of the last round)
``accuracy/round1_majority``        the majority vote of round 1 alone
``accuracy/agent_round1``           each agent's own round-1 answer (``agent=n``; ``None``: mean share)
``accuracy/agent_final``            each agent's own last-round answer (same)
``consensus``                       share of agents agreeing with the final answer, mean over problems
``consensus/round1``                share of agents agreeing with the round-1 majority
``answers_per_problem``             answers generated per problem (N x R)
``cutoff/round<r>``, ``cutoff/summary``  share of round r's answers / of summaries cut off by their token
                                    budget (mafl.metrics.cutoff)
``flips/round<r>-<r+1>/<cell>``     how answers move from round r to r+1: share of agents right->right,
                                    wrong->right, right->wrong, wrong->wrong (mafl.metrics.dynamics)
``moves/round<r>-<r+1>/<move>``     where round r+1's answers come from: kept (the agent's own), adopted
                                    (another agent's of round r), new
``adopt_majority/round<r>-<r+1>``   of the agents facing a strict majority of the others that differs from
                                    their own round-r answer, the share that take it up in round r+1
``conformity/round<r>-<r+1>``       the same over the agents facing a *wrong* majority of the others;
``persuasion/round<r>-<r+1>``       over those facing a *right* one (mafl.metrics.dynamics)
``consensus/round<r>``              (r >= 2) share of agents agreeing with round r's majority
``oracle/round<r>``                 share of problems whose gold answer is among round r's answers (pass@N)
``voted_out``, ``voted_out/round<r>``  share of problems whose gold answer is among round 1's (round r's)
                                    answers but whose final answer is wrong (mafl.metrics.failures)
``entropy/round<r>``                entropy (bits) of round r's answers, clustered by equivalence
``tokens/answers``, ``tokens/summaries``, ``tokens/total``  tokens generated per problem for the answers, the
                                    summaries and both (mafl.metrics.cutoff)
``kl/agents``                       per-token KL between agents (``agent=i, other=j``: the matrix entry;
                                    ``agent=None``: its mean off the diagonal), round 1 (generators)
``kl/base``                         per-token KL of each agent's model against the base model, round 1
``nll``                             per-token negative log-likelihood of each agent's responses under
                                    its own model, round 1
``embedding_dissimilarity``         1 - cosine similarity between agents' round-1 responses
``*_final``                         ``kl/agents_final``, ``kl/base_final``, ``nll_final`` and
                                    ``embedding_dissimilarity_final``: the same on the last round (critics),
                                    when ``metrics.diversity_rounds`` lists ``final``
==================================  =====================================================================

Accuracies, consensus and embedding dissimilarity are means over problems: stderr ``sd/sqrt(n)`` with
``ddof=1``. KL and NLL are per-token ratios: bootstrap stderr. Every record has a seeded bootstrap 95%
interval. The likelihood and embedding metrics use at most ``metrics.diversity_problems`` problems (the same
ones at every iteration) and only when ``metrics.diversity`` is true; the likelihood metrics need a backend
that has the iteration's adapters loaded and are skipped when ``backend`` is None.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from mafl.backends.base import Backend, ScoringUnavailable
from mafl.debate.transcript import Transcript
from mafl.metrics.accuracy import accuracy_records
from mafl.metrics.cutoff import cutoff_records
from mafl.metrics.dynamics import flip_records
from mafl.metrics.failures import failure_records
from mafl.metrics.diversity import Embedder, consensus_records, diversity_subset, embedding_records, load_embedder
from mafl.metrics.likelihood import LIKELIHOOD_METRICS, likelihood_records
from mafl.metrics.settings import ROUNDS, MetricsSettings
from mafl.metrics.stats import MetricRecord
from mafl.tasks.base import Task


def compute_iteration_metrics(
    transcripts: Sequence[Transcript],
    task: Task,
    *,
    backend: Backend | None = None,
    metrics_cfg: MetricsSettings | Mapping[str, Any],
    iteration: int,
    split: str,
    seed: int,
    embedder: Embedder | Callable[[list[str]], Any] | None = None,
    unavailable: dict[str, str] | None = None,
) -> list[MetricRecord]:
    """The records of one iteration and split (see the module docstring for the list).

    ``metrics_cfg``: the checked settings, or a ``metrics`` config (checked here). ``embedder`` (texts ->
    unit-norm embeddings) replaces the model named by ``metrics.embedding_model``; ``embedding_model: null``
    turns embedding dissimilarity off. A backend that cannot score (``ScoringUnavailable``: a server without prompt
    log-probabilities) gives no likelihood metrics; each is put in ``unavailable`` with the reason, and every other
    metric is measured.
    """
    cfg = metrics_cfg if isinstance(metrics_cfg, MetricsSettings) else MetricsSettings.from_cfg(metrics_cfg)
    common = dict(iteration=iteration, split=split, samples=cfg.bootstrap_samples, seed=seed)
    transcripts = [t for t in transcripts if t.rounds]
    records = accuracy_records(transcripts, task, **common) + consensus_records(transcripts, task, **common)
    records += cutoff_records(transcripts, **common) + flip_records(transcripts, task, **common)
    records += failure_records(transcripts, task, **common)
    if not cfg.diversity or not transcripts:
        return records

    subset = diversity_subset(transcripts, cfg.diversity_problems)
    rounds = list(cfg.diversity_rounds)
    if len(rounds) == 2 and all(len(t.rounds) == 1 for t in subset):
        rounds = ["first"]  # one round: the last round is the first
    if backend is not None:
        for r in rounds:
            index, suffix = ROUNDS[r]
            try:
                records += likelihood_records(subset, backend, round_index=index, suffix=suffix,
                                              chunk_size=cfg.score_chunk_size, **common)
            except ScoringUnavailable as e:
                if unavailable is not None:
                    unavailable.update({m + suffix: str(e) for m in LIKELIHOOD_METRICS})
    if embedder is None and cfg.embedding_model:
        embedder = load_embedder(cfg.embedding_model, cfg.embedding_device, cfg.embedding_batch_size)
    if embedder is not None:
        for r in rounds:
            index, suffix = ROUNDS[r]
            records += embedding_records(subset, embedder, round_index=index,
                                         metric="embedding_dissimilarity" + suffix, **common)
    return records
