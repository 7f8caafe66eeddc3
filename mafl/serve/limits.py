"""What ``mafl serve`` checks in a request before any work, so that no request can take more than a bounded share
of the server (docs/api.md lists them):

* the body: at most ``--max-body-bytes`` (413 past it, before it is parsed: :mod:`mafl.serve.guard`);
* ``n``: at most ``--max-n`` completions;
* the context: the prompt's tokens plus ``max_tokens`` at most the model's context (``max_position_embeddings``, or
  ``--max-model-len``); without ``max_tokens``, the completion may fill what the prompt leaves (as vLLM does). A
  prompt far longer than the context could hold (its bytes over the context times the longest token's bytes) is
  refused before it is tokenized;
* every message: a ``role`` (a string) and a ``content``, a string or OpenAI's list of text parts;
* ``seed``: a 64-bit signed integer (vLLM's range).

Each failed check is a :class:`ServeError` (a 400 unless said otherwise) whose message starts with the field.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_N = 16
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
SEED_RANGE = (-2 ** 63, 2 ** 63 - 1)  # torch's generators take 64-bit seeds; vLLM accepts this range


class ServeError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass(frozen=True)
class Limits:
    context: int  # the model's context in tokens: prompt + completion
    max_n: int = DEFAULT_MAX_N
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_token_bytes: int = 64  # the most bytes one token of the vocabulary stands for (an upper bound)

    def __post_init__(self):
        for key in ("context", "max_n", "max_body_bytes", "max_token_bytes"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1 (got {getattr(self, key)})")

    def check_n(self, n: int) -> None:
        if n > self.max_n:
            raise ServeError(400, f"n: must be <= {self.max_n} (got {n}; mafl serve --max-n sets the cap)")

    def check_text_size(self, size: int, what: str = "messages") -> None:
        """Refuse, before tokenizing, a prompt of ``size`` bytes that cannot fit: even if each of its tokens
        stood for ``max_token_bytes`` bytes, it would hold more tokens than the context."""
        if size > self.context * self.max_token_bytes:
            raise ServeError(400, f"{what}: {size} bytes of text cannot fit this model's maximum context length of "
                                  f"{self.context} tokens (a token stands for at most {self.max_token_bytes} bytes)")

    def max_tokens(self, prompt_tokens: int, asked: int | None, what: str = "messages") -> int:
        """The completion's budget: ``asked``, or what the context leaves; a 400 naming both numbers when the
        prompt and the completion do not fit the context."""
        if asked is None:
            if prompt_tokens >= self.context:
                raise ServeError(400, f"{what}: this model's maximum context length is {self.context} tokens; the "
                                      f"prompt has {prompt_tokens} tokens, which leaves none for the completion: "
                                      "reduce the length of the prompt")
            return self.context - prompt_tokens
        if prompt_tokens + asked > self.context:
            raise ServeError(400, f"max_tokens: this model's maximum context length is {self.context} tokens; you "
                                  f"requested {prompt_tokens + asked} tokens ({prompt_tokens} in the prompt, {asked} "
                                  "in the completion): reduce the length of the prompt or max_tokens")
        return asked


def context_length(model_config, tokenizer=None, max_model_len: int | None = None) -> int:
    """A model's context in tokens: its config's ``max_position_embeddings`` (or the other names configs give it),
    else the tokenizer's ``model_max_length`` when that is a real number; ``max_model_len``
    (``--max-model-len``) may lower it, not raise it."""
    own = None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        value = getattr(model_config, key, None)
        if isinstance(value, int) and value > 0:
            own = value
            break
    if own is None:
        value = getattr(tokenizer, "model_max_length", None)
        own = value if isinstance(value, int) and 0 < value < 10 ** 8 else None
    if max_model_len is not None:
        if own is not None and max_model_len > own:
            raise ValueError(f"--max-model-len: {max_model_len} is more than the model's {own} positions")
        return int(max_model_len)
    if own is None:
        raise ValueError("the model's context length is not in its config: pass --max-model-len")
    return own


def max_token_bytes(tokenizer) -> int:
    """An upper bound on the bytes of text one token stands for: the longest entry of the vocabulary in UTF-8
    (byte-level and SentencePiece vocabularies spell a byte with one or more characters, so a token never stands
    for more bytes than its entry has)."""
    return max((len(t.encode("utf-8")) for t in tokenizer.get_vocab()), default=1) or 1


def unicode(text: str, where: str) -> str:
    """``text``, refused when it is not valid Unicode (JSON's escapes can spell a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ServeError(400, f"{where}: not valid Unicode (a lone surrogate)") from None
    return text


def text_of(content, where: str) -> str:
    """A message's content: a string, or OpenAI's list of parts (the text parts, joined)."""
    if isinstance(content, str):
        return unicode(content, f"{where}.content")
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if any(p.get("type", "text") != "text" or not isinstance(p.get("text"), str) for p in content):
            raise ServeError(400, f"{where}.content: mafl serve reads text parts only ([{{type: text, text: ...}}])")
        return unicode("".join(p["text"] for p in content), f"{where}.content")
    if content is None:
        raise ServeError(400, f"{where}.content: missing (a string, or a list of text parts)")
    raise ServeError(400, f"{where}.content: a string or a list of text parts (got {type(content).__name__})")


def messages_of(value) -> list[dict]:
    """The request's messages as ``{role, content}`` with string contents; a 400 naming the first bad one."""
    if not isinstance(value, list) or not value:
        raise ServeError(400, "messages: a non-empty list of {role, content}")
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ServeError(400, f"messages[{k}]: an object with a role (a string) and a content (got {m!r:.60})")
        out.append({"role": unicode(m["role"], f"messages[{k}].role"),
                    "content": text_of(m.get("content"), f"messages[{k}]")})
    return out


def number(body: dict, key: str, default, kind=float, low=None, high=None):
    """``body[key]`` checked: a number (an integer for ``kind=int``; booleans are not numbers) within bounds."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ServeError(400, f"{key}: must be a{'n integer' if kind is int else ' number'} (got {value!r:.60})")
    if value != value:  # NaN
        raise ServeError(400, f"{key}: must be a number (got NaN)")
    if low is not None and value < low:
        raise ServeError(400, f"{key}: must be >= {low} (got {str(value)[:60]})")
    if high is not None and value > high:
        raise ServeError(400, f"{key}: must be <= {high} (got {str(value)[:60]})")
    return kind(value)


def seed_of(body: dict) -> int:
    return number(body, "seed", 0, int, low=SEED_RANGE[0], high=SEED_RANGE[1])
