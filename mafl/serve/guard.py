"""The outermost layer of ``mafl serve`` (an ASGI middleware): whatever a request holds, the server answers it with
a status and writes at most one line about it.

* **An id per request**: the client's ``X-Request-Id`` (letters, digits, ``._-``, at most 64) or a new one,
  sent back in the response's ``x-request-id``.
* **The API key** (``--api-key-env``): every ``/v1`` request without it gets a 401.
* **The body**: at most ``max_body_bytes`` is held; a larger ``Content-Length``, or a body that grows past the bound
  while it streams in, gets a 413 and nothing more of it is kept: the rest is read and thrown away (up to 64 MiB,
  so that a client that sends its whole body before reading gets the 413; past that, or for a client that waits
  for ``100 Continue``, the connection is closed).
* **Failures**: every answer of status 400 or more, and every error the application raises, is one line on stderr,
  ``mafl serve: <request id> <status> <method> <path>: <reason>``; an error the application did not handle is a
  500 in OpenAI's error shape, never a traceback, and the connection stays usable.

:func:`log_config` gives uvicorn's own loggers a formatter that writes an exception on the same line as its message
(uvicorn's protocol errors), so nothing on the console is a traceback.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from typing import Callable

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
BODY_METHODS = {"POST", "PUT", "PATCH"}
DRAIN_BYTES = 64 * 1024 * 1024  # the most of a refused body read (and thrown away) before the connection is closed
CLIENT_GONE = 499  # the status logged for a request whose client went away (nginx's convention); never sent


def say_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def one_line(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_body(status: int, message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": status}}).encode()


class Guard:
    """See the module docstring. ``authorized(header) -> bool`` checks the ``Authorization`` header of ``/v1``
    requests; ``say`` writes one line."""

    def __init__(self, app, *, max_body_bytes: int, authorized: Callable[[str | None], bool] | None = None,
                 say: Callable[[str], None] = say_stderr):
        self.app, self.max_body_bytes, self.authorized, self.say = app, max_body_bytes, authorized, say

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        rid = given if REQUEST_ID.match(given) else f"req-{uuid.uuid4().hex[:16]}"
        scope.setdefault("state", {})["request_id"] = rid
        where = f"{scope.get('method', '?')} {scope.get('path', '?')}"
        seen = {"status": None, "body": bytearray(), "complete": False}

        async def send_(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            elif message["type"] == "http.response.body":
                if (seen["status"] or 0) >= 400 and len(seen["body"]) < 4096:
                    seen["body"] += message.get("body", b"")[:4096]
                seen["complete"] = not message.get("more_body", False)
            await send(message)

        async def refuse(status: int, message: str, kind: str, close: bool = False):
            body = error_body(status, message, kind)
            extra = [(b"connection", b"close")] if close else []
            await send_({"type": "http.response.start", "status": status,
                         "headers": [(b"content-type", b"application/json"),
                                     (b"content-length", str(len(body)).encode()), *extra]})
            await send_({"type": "http.response.body", "body": body})

        reason = None
        try:
            if (self.authorized is not None and scope.get("path", "").startswith("/v1/")
                    and not self.authorized(headers.get("authorization"))):
                await refuse(401, "Incorrect API key provided.", "invalid_api_key")
            elif scope.get("method") in BODY_METHODS:
                body = await self._body(headers, receive, refuse)
                if body is not None:
                    await self.app(scope, replay(body, receive), send_)
            else:
                await self.app(scope, receive, send_)
        except Exception as e:  # noqa: BLE001 - any error: one line and a 500, never a traceback
            reason = f"{type(e).__name__}: {e}"
            if seen["status"] is None:
                await refuse(500, f"internal error: {one_line(reason, 300)}", "internal_error")
        status = seen["status"]
        if status is not None and status >= 400 or reason is not None:
            if reason is None:
                reason = self._reason(bytes(seen["body"]))
            self.say(f"mafl serve: {rid} {status} {where}: {one_line(reason)}")

    async def _body(self, headers: dict, receive, refuse) -> bytes | None:
        """The request's body, read up to ``max_body_bytes``; None after answering 413 (or 400). A body past the
        bound is read on and thrown away (up to :data:`DRAIN_BYTES` more), so that a client that sends all of it
        before reading the answer gets the 413 rather than a reset connection; past that the connection is
        closed."""
        length = headers.get("content-length")
        if length is not None and not length.strip().isdigit():
            await refuse(400, f"Content-Length: not a number ({length[:40]!r})", "invalid_request_error", close=True)
            return None
        declared = int(length) if length is not None else None
        chunks, size = [], 0
        too_large = declared is not None and declared > self.max_body_bytes
        while True:
            if too_large:
                # a client waiting for "100 Continue" has sent nothing yet: answer at once; else read on
                waiting = headers.get("expect", "").lower() == "100-continue" and size == 0
                whole = False if waiting else await self._drain(receive, size)
                shown = f" ({declared} bytes)" if declared is not None else ""
                await refuse(413, f"the request body{shown} is larger than this server takes ({self.max_body_bytes} "
                                  "bytes: mafl serve --max-body-bytes)", "invalid_request_error", close=not whole)
                return None
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client went away while sending: nothing to answer
            piece = message.get("body", b"")
            size += len(piece)
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                chunks, too_large = [], True
                if not more:
                    await refuse(413, f"the request body is larger than this server takes ({self.max_body_bytes} "
                                      "bytes: mafl serve --max-body-bytes)", "invalid_request_error")
                    return None
                continue
            chunks.append(piece)
            if not more:
                return b"".join(chunks)

    @staticmethod
    async def _drain(receive, size: int) -> bool:
        """Read the rest of a refused body without keeping it, up to DRAIN_BYTES in all; True when it all came."""
        while size <= DRAIN_BYTES:
            message = await receive()
            if message["type"] == "http.disconnect":
                return False
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
        return False

    @staticmethod
    def _reason(body: bytes) -> str:
        try:
            error = json.loads(body.decode("utf-8", "replace")).get("error")
            return str(error.get("message")) if isinstance(error, dict) else str(error)
        except (ValueError, AttributeError):
            return body.decode("utf-8", "replace") or "(no body)"


def replay(body: bytes, receive):
    """A ``receive`` that gives ``body`` once, then the connection's own messages (its disconnect)."""
    sent = False

    async def receive_():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return receive_


class OneLineFormatter(logging.Formatter):
    """A record on one line: an exception's type and message after the text, never its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage().strip()
        if record.exc_info and record.exc_info[1] is not None:
            e = record.exc_info[1]
            text = f"{text}: {type(e).__name__}: {e}"
        return one_line(f"mafl serve: {record.levelname.lower()}: {text}", 400)

    def formatException(self, ei) -> str:  # noqa: N802 - logging's name
        return ""


def log_config() -> dict:
    """uvicorn's logging, each record on one line (:class:`OneLineFormatter`), to stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"one_line": {"()": OneLineFormatter}},
        "handlers": {"stderr": {"formatter": "one_line", "class": "logging.StreamHandler",
                                "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
                    "uvicorn.error": {"level": "INFO"},
                    "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
    }
