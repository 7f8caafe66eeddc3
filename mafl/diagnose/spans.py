"""The log-probability of part of a scored response: the tokens that cover some of its characters.

A backend scores ``chat.response_ids(response)`` (the response's tokens, then eos) and returns each token's
log-probability (``Score.token_logprobs``). The characters each token covers come from the tokenizer's offsets
(a fast tokenizer's ``return_offsets_mapping``), tokenized exactly as ``chat.response_ids`` does; a token
overlapping the span counts whole (`` 42`` for the span ``42``).
"""
from __future__ import annotations

import math
from typing import Sequence


def token_offsets(tokenizer, text: str) -> list[tuple[int, int]]:
    """(start, end) characters of each token of ``text`` (tokenized as ``chat.response_ids`` tokenizes it)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("the span probes need a fast tokenizer (character offsets of tokens)")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(o) for o in encoded["offset_mapping"]]


def span_logprob(tokenizer, text: str, token_logprobs: Sequence[float], span: tuple[int, int]) -> float:
    """Sum of the log-probabilities of the tokens of ``text`` that overlap the characters ``span``; NaN when the
    scores do not line up with the tokens (``token_logprobs``: one per token, then the eos's) or none overlaps."""
    offsets = token_offsets(tokenizer, text)
    if len(token_logprobs) != len(offsets) + 1:
        return math.nan
    start, end = span
    chosen = [lp for (s, e), lp in zip(offsets, token_logprobs) if s < end and e > start and e > s]
    return float(sum(chosen)) if chosen else math.nan
