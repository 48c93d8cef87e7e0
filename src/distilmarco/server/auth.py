"""API-key check: ``Authorization: Bearer KEY``, compared in constant time, before the body is read."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from distilmarco.server.http_errors import ApiError, error_response

# Open without a key: liveness probes and the search page's static shell (it asks for the key).
PUBLIC_PATHS = frozenset({"/health", "/", "/favicon.ico"})


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        given = _bearer(scope)
        if given is None or not hmac.compare_digest(given, self._key):
            challenge = 'Bearer realm="distilmarco"'
            if given is not None:
                challenge += ', error="invalid_token"'
            err = ApiError(
                401,
                "a valid API key is required: send 'Authorization: Bearer <key>'"
                if given is None
                else "the API key is not valid",
                headers={"WWW-Authenticate": challenge},
            )
            await error_response(scope.get("path", ""), err)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return b""
    return None
