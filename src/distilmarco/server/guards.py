"""Checks on every request before any route: the Host header and the URL path's encoding.

A key-less server on loopback answers only to loopback host names, so a web page whose domain
is re-pointed at 127.0.0.1 (DNS rebinding) cannot reach it. A path whose percent-escapes are not
UTF-8 is refused: decoding it with replacement characters would merge distinct ids.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from distilmarco.server.http_errors import ApiError, error_response

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind: str, configured: Iterable[str]) -> frozenset[str] | None:
    """Host names to accept (lower case, no port); None accepts any.

    ``configured`` wins ("*" in it accepts any); otherwise a server bound to loopback accepts
    only loopback names and one bound elsewhere accepts any (its API key guards it)."""
    names = {h.strip().lower().strip("[]") for h in configured if h.strip()}
    if "*" in names:
        return None
    if names:
        return frozenset(names)
    return frozenset(LOOPBACK_NAMES) if is_loopback(bind) else None


def host_name(header: str) -> str:
    """The name in a Host header value, without the port and IPv6 brackets, lower case."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    name, colon, _ = value.rpartition(":")
    return name if colon and ":" not in name else value


class RequestGuardMiddleware:
    """400 for a Host outside ``hosts`` (None: any) or a path that is not UTF-8 once decoded."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        err = self._check(scope)
        if err is not None:
            await error_response(scope.get("path", ""), err)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> ApiError | None:
        if self.hosts is not None:
            headers = dict(scope.get("headers") or [])
            raw = headers.get(b"host", b"").decode("latin-1")
            if host_name(raw) not in self.hosts:
                return ApiError(
                    400,
                    f"host {raw!r} is not allowed; this server answers to "
                    f"{', '.join(sorted(self.hosts))} (widen with --allowed-hosts)",
                    code="host_not_allowed",
                )
        raw_path = scope.get("raw_path") or b""
        try:
            unquote_to_bytes(raw_path.decode("latin-1")).decode("utf-8")
        except UnicodeDecodeError as exc:
            return ApiError(
                400,
                f"the URL path is not valid UTF-8 once its %-escapes are decoded "
                f"(byte {exc.start}): {exc.reason}",
                code="invalid_path",
            )
        return None
