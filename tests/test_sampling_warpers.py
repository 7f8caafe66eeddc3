"""The hf backend's top-k + top-p (mafl.backends.hf.TopKTopP) keeps exactly the tokens that transformers' two warpers
keep, including rows with tied values (where it takes the warpers' own path), so that a sampled debate is the same
token for token as with the warpers; it only avoids sorting the whole vocabulary."""
from __future__ import annotations

import pytest
import torch

from mafl.backends.hf import RowSampler, TopKTopP


@pytest.mark.parametrize("vocab", [49152, 1500, 40])
@pytest.mark.parametrize("top_k,top_p", [(50, 0.9), (5, 0.5), (200, 0.99), (50, 0.05), (64, 0.95)])
def test_same_tokens_as_transformers_warpers(vocab, top_k, top_p):
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    ids = torch.zeros(1, 1, dtype=torch.long)
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        scores = torch.randn(16, vocab, generator=g) * (1 + 2 * seed)
        if seed == 3:
            scores = (scores * 2).round() / 2  # many tied values
        want = TopPLogitsWarper(top_p)(ids, TopKLogitsWarper(top_k)(ids, scores.clone()))
        got = TopKTopP(top_k, top_p)(ids, scores.clone())
        assert torch.equal(want, got)
        assert (got > -float("inf")).sum(-1).min() >= 1


def test_row_sampler_draws_what_the_warpers_would():
    """A sampled row with the combined warper draws the same tokens as with transformers' warpers applied one by one
    (the same generator, the same probabilities)."""
    from transformers import LogitsProcessorList, TopKLogitsWarper, TopPLogitsWarper

    class Sampling:
        temperature, top_k, top_p = 0.7, 50, 0.9

    ids = torch.zeros(4, 1, dtype=torch.long)
    fast = RowSampler(Sampling, [1, 2, 3, 4], "cpu")
    assert any(isinstance(w, TopKTopP) for w in fast.warpers)
    slow = RowSampler(Sampling, [1, 2, 3, 4], "cpu")
    slow.warpers = LogitsProcessorList([*(w for w in slow.warpers if not isinstance(w, TopKTopP)),
                                        TopKLogitsWarper(50), TopPLogitsWarper(0.9)])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        scores = torch.randn(4, 5000, generator=g)
        assert torch.equal(fast(ids, scores.clone()), slow(ids, scores.clone()))
