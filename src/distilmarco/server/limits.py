"""Request limits: body size (enforced while reading, chunked bodies too), JSON content type,
UTF-8, inputs, characters.

``BodyLimitMiddleware`` reads the whole body before the app sees it, stopping at the first byte
over the limit, then replays it; so no route ever holds more than ``max_body_bytes`` of a request.
The rest of an oversized body is read and dropped before the 413 goes out (up to
``DRAIN_LIMIT``): a client still sending would otherwise see the connection reset, not the 413.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distilmarco.server.http_errors import ApiError, error_response

_SURROGATE = re.compile("[\ud800-\udfff]")
DRAIN_LIMIT = 64 << 20  # bytes of an oversized body read and dropped so its sender sees the 413


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``; 415 for bodies that are not JSON; 422 for JSON bodies
    that are not valid UTF-8."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await self._fail(scope, send, ApiError(400, "Content-Length is not a number"))
                return
            if too_big:
                if b"100-continue" not in headers.get(b"expect", b"").lower():
                    await _drain(receive, DRAIN_LIMIT)  # the client sends it anyway
                await self._fail(scope, send, self._too_large())
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await _drain(receive, DRAIN_LIMIT)
                await self._fail(scope, send, self._too_large())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and not _is_json(headers.get(b"content-type")):
            kind = headers.get(b"content-type", b"").decode("latin-1") or "none"
            await self._fail(
                scope,
                send,
                ApiError(
                    415,
                    f"the body must be JSON: send 'Content-Type: application/json' (got {kind})",
                ),
            )
            return
        if body:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                await self._fail(
                    scope,
                    send,
                    ApiError(422, f"the body is not valid UTF-8 (byte {exc.start}): {exc.reason}"),
                )
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request body is larger than the limit of {self.max_bytes} bytes")

    async def _fail(self, scope: Scope, send: Send, err: ApiError) -> None:
        response = error_response(scope.get("path", ""), err)
        response.headers["Connection"] = "close"
        await response(scope, _drain_nothing, send)


async def _drain_nothing() -> Message:
    return {"type": "http.disconnect"}


async def _drain(receive: Receive, limit: int) -> None:
    """Read and drop the rest of a body, at most ``limit`` bytes of it."""
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    kind = content_type.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or kind.endswith(b"+json")


def check_texts(texts: Sequence[str], max_inputs: int, max_chars: int, param: str) -> None:
    """Limits on one request's texts, checked before tokenising anything."""
    if not texts:
        raise ApiError(422, f"{param} must hold at least one text", param=param)
    if len(texts) > max_inputs:
        raise ApiError(
            413,
            f"{param} holds {len(texts)} texts; at most {max_inputs} are allowed per request",
            param=param,
        )
    for i, text in enumerate(texts):
        if len(text) > max_chars:
            raise ApiError(
                413,
                f"{param}[{i}] has {len(text)} characters; at most {max_chars} are allowed",
                param=param,
            )
        bad = _SURROGATE.search(text)
        if bad:
            raise ApiError(
                422,
                f"{param}[{i}] contains a lone surrogate (U+{ord(bad.group()):04X}) at position "
                f"{bad.start()}: it is not valid Unicode text",
                param=param,
            )


def check_unicode(value: object, param: str) -> None:
    """422 when any string inside ``value`` (nested dicts/lists, keys too) has a lone surrogate."""
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise ApiError(
                    422, f"{param} contains a lone surrogate: it is not valid Unicode", param=param
                )
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
