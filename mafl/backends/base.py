"""The generation backend contract: what every backend (``backend.name``) offers the rest of mafl.

* **Construction.** ``Backend(model_path, *, dtype, device, chat_template, trust_remote_code, progress, **options)``.
  The session passes the :data:`COMMON_SETTINGS` from the model's config (``model.dtype``, ``device``,
  ``model.chat_template``, ``model.trust_remote_code``) and the console; every other key of the backend's config
  group (``conf/backend/<name>.yaml``, less ``name``) is one of the backend's own keyword arguments. A backend
  accepts every common setting even when it has no use for one (vLLM runs where it was built, whatever ``device``).
* **Tokens.** A backend loads its tokenizer with :func:`mafl.models.load_tokenizer` (exposed as ``.tokenizer``)
  and turns messages into tokens only through :mod:`mafl.backends.chat`, the same functions the trainer uses:
  a model generates from the prompt tokens it was fine-tuned on.
* **Weights.** One base model; ``load_adapter(name, path)`` serves the fine-tuned weights in ``path`` under
  ``name`` (replacing any weights of that name), ``unload(name)`` stops serving them (unknown names are
  ignored), ``adapters()`` lists the names served, ``close()`` frees the memory (fine-tuning needs it; closing
  twice is fine). ``path`` is a LoRA adapter folder, or, where :attr:`Capabilities.full_models` holds, a whole
  fine-tuned model (``finetune.mode=full``); a backend without that capability raises ``NotImplementedError``.
* **Requests.** ``generate`` and ``score`` take a list of requests, each naming its model (an adapter name,
  or ``None`` for the base model), and return one result per request in the order of the requests; a backend is
  free to batch requests across models and problems. An unknown adapter name raises ``KeyError`` before any
  work. The same requests (with the same seeds) give the same completions however often they are asked.
* **Per-token scores.** A :class:`Score` also carries ``token_logprobs``: the log-probability of each token of
  ``chat.response_ids(response)`` (eos last), in order, summing to ``logprob``; a caller that needs part of a
  response (the answer's tokens at its end: ``mafl diagnose``) locates those tokens with the backend's tokenizer.
* **Operational keys.** A backend class may list in ``operational_keys`` the keys of its config group that say how
  it works, not what it answers (a server's address, timeouts, retries, concurrency): a resumed run may change them.
* **Capabilities.** :class:`Capabilities` says what a backend can do beyond generation; it is a class attribute,
  so a check can read it before any model is loaded (``backend_class(name).capabilities``): validation refuses
  ``finetune.mode=full`` for a backend without ``full_models``, and ``debate.chunk_size=auto`` becomes the
  backend's ``chunk_size``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, Sequence

# the keyword arguments every backend's constructor takes beside the model's path (see the module docstring)
COMMON_SETTINGS = ("dtype", "device", "chat_template", "trust_remote_code", "progress")


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond generating from the base model and LoRA adapters."""

    score: bool = True  # log-likelihoods of given responses (the nll and KL metrics)
    full_models: bool = False  # load_adapter() also takes a whole fine-tuned model's folder (finetune.mode=full)
    # problems per checkpointed debate chunk with debate.chunk_size=auto: as many as keep the backend busy (a
    # chunk's round is one generate() call; vLLM schedules every request of it at once)
    chunk_size: int = 100


class ScoringUnavailable(RuntimeError):
    """``score`` cannot be answered (a server that returns no prompt log-probabilities, no local tokenizer): the
    likelihood metrics are reported as unavailable, with this message as the reason, and the run goes on."""


def request_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th request of a call, for a backend that seeds each request on its own. Requests
    of one debate round share ``Sampling.seed``: identical prompts with identical seeds would give identical
    answers."""
    digest = hashlib.sha256(repr((seed, index)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one request. ``temperature=0`` means greedy decoding."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[dict, ...] | list[dict]
    adapter: str | None = None
    sampling: Sampling = field(default_factory=Sampling)


@dataclass(frozen=True)
class Completion:
    text: str  # the response's text, stripped, without its eos
    num_tokens: int  # tokens generated, the closing eos included
    finished: bool = True  # False when cut by max_new_tokens


@dataclass(frozen=True)
class ScoringRequest:
    """Log-likelihood of ``response`` as the assistant's answer to ``messages`` under ``adapter``."""

    messages: tuple[dict, ...] | list[dict]
    response: str
    adapter: str | None = None


@dataclass(frozen=True)
class Score:
    logprob: float  # sum of the log-probabilities of the response's tokens (``chat.response_ids``: eos included)
    num_tokens: int
    token_logprobs: tuple[float, ...] = ()  # each of those tokens' log-probability, in order (len == num_tokens)


class Backend(Protocol):
    capabilities: ClassVar[Capabilities]
    tokenizer: object

    def __init__(self, model_path: str, *, dtype: str, device: str, chat_template: str | None,
                 trust_remote_code: bool, progress: bool, **options) -> None: ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]: ...

    def score(self, requests: Sequence[ScoringRequest]) -> list[Score]:
        """Only where ``capabilities.score`` holds."""

    def load_adapter(self, name: str, path: str) -> None:
        """Serve the weights in the folder ``path`` as ``name``, replacing any weights of that name."""

    def unload(self, name: str) -> None: ...

    def adapters(self) -> list[str]: ...

    def close(self) -> None: ...
