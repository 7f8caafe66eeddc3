"""The tokens a model sees: one chat tokenisation shared by generation (both backends), likelihoods and training.

A prompt is a list of chat messages (system, user, and for a longer conversation earlier assistant and user
turns), rendered by the tokenizer's chat template with the generation prompt and tokenized with
``add_special_tokens=False``: a template writes its own special tokens (a BOS included, when the template has
``{{ bos_token }}``), so a tokenizer whose post-processor also adds a BOS does not get a second one. A response
is its text's tokens and the tokenizer's eos, which is where generation stops.

Generation sends ``prompt_ids(messages)`` to the model; a likelihood scores ``response_ids(response)`` after it;
a fine-tuning example is exactly their concatenation (:func:`example_ids`), with the loss on the response only.
So training and generation see the same prompt tokens, whatever the template or the tokenizer.

A completion's text is decoded from its generated token ids by :func:`completion`, whichever engine generated them.
"""
from __future__ import annotations

from typing import Collection, Sequence

from mafl.backends.base import Completion


def prompt_ids(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Token ids of ``messages`` rendered by the chat template, ending with the assistant's generation prompt."""
    text = tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def response_ids(tokenizer, response: str) -> list[int]:
    """Token ids of an assistant response as the model produces it: its text, then eos."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token: a response could not end")
    return list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def example_ids(tokenizer, messages: Sequence[dict], response: str) -> tuple[list[int], list[int]]:
    """A fine-tuning example: (input ids, completion mask). The ids are ``prompt_ids(messages)`` then
    ``response_ids(response)``; the mask is 0 on every prompt token (earlier assistant turns of a multi-turn
    prompt included) and 1 on the response and its eos, the only tokens that carry the loss."""
    prompt, completion = prompt_ids(tokenizer, messages), response_ids(tokenizer, response)
    return prompt + completion, [0] * len(prompt) + [1] * len(completion)


def completion(tokenizer, ids: Sequence[int], eos_ids: Collection[int]) -> Completion:
    """The completion of the generated token ids ``ids``: the text of the tokens before the first of ``eos_ids``
    (special tokens skipped, stripped), ``num_tokens`` counting that eos, ``finished`` whether one came (else the
    budget cut it). An engine's own text may differ (vLLM holds back an incomplete UTF-8 character)."""
    n = next((k for k, t in enumerate(ids) if t in eos_ids), None)
    body = list(ids) if n is None else list(ids[:n])
    text = tokenizer.decode(body, skip_special_tokens=True).strip()
    return Completion(text=text, num_tokens=len(body) + (0 if n is None else 1), finished=n is not None)
