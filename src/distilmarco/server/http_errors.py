"""Library errors become HTTP here, and only here: a status, a stable JSON shape, headers.

Two shapes: routes under ``/v1/`` answer like OpenAI, ``{"error": {"message", "type", "param",
"code"}}``; every other route answers like text-embeddings-inference, ``{"error": message,
"error_type": kind}``. Bodies are ASCII JSON, so no input echoed in a message can break them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from starlette.responses import Response

from distilmarco.errors import (
    ClientGoneError,
    DistilmarcoError,
    IndexBusyError,
    IndexFullError,
    IndexStoreError,
    InputError,
    MissingExtraError,
    NonFiniteOutputError,
    NotFoundError,
    QueueFullError,
    ServerClosedError,
)

log = logging.getLogger(__name__)

# status -> (OpenAI type, OpenAI code, TEI-style error_type)
_KINDS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", "invalid_json", "Validation"),
    401: ("invalid_request_error", "invalid_api_key", "Unauthorized"),
    404: ("invalid_request_error", "not_found", "NotFound"),
    405: ("invalid_request_error", "method_not_allowed", "Validation"),
    409: ("invalid_request_error", "conflict", "Conflict"),
    413: ("invalid_request_error", "request_too_large", "Validation"),
    415: ("invalid_request_error", "unsupported_media_type", "Validation"),
    422: ("invalid_request_error", "invalid_value", "Validation"),
    429: ("requests", "rate_limit_exceeded", "Overloaded"),
    499: ("invalid_request_error", "client_closed_request", "Cancelled"),
    500: ("server_error", "internal_error", "Backend"),
    501: ("server_error", "not_implemented", "Backend"),
    503: ("server_error", "unavailable", "Unavailable"),
    507: ("server_error", "insufficient_storage", "Storage"),
}


class ApiError(Exception):
    """An HTTP error answer: raised by route code, rendered by ``error_response``."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})


def error_body(path: str, status: int, message: str, param: str | None, code: str | None) -> dict:
    oa_type, oa_code, kind = _KINDS.get(status, _KINDS[500 if status >= 500 else 422])
    if path.startswith("/v1/"):
        return {
            "error": {"message": message, "type": oa_type, "param": param, "code": code or oa_code}
        }
    return {"error": message, "error_type": kind}


def error_response(path: str, err: ApiError) -> Response:
    body = error_body(path, err.status, err.message, err.param, err.code)
    return Response(
        json.dumps(body, ensure_ascii=True, allow_nan=False),
        status_code=err.status,
        media_type="application/json",
        headers=dict(err.headers),
    )


def from_library(exc: Exception) -> ApiError:
    """The HTTP meaning of an exception: our own error types map to 4xx/5xx, anything else to 500."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, QueueFullError):
        return ApiError(429, str(exc), headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, ServerClosedError):
        return ApiError(503, str(exc), headers={"Retry-After": "5"})
    if isinstance(exc, ClientGoneError):
        return ApiError(499, str(exc))
    if isinstance(exc, NonFiniteOutputError):
        # the text itself cannot be embedded by this deployment: retrying it will not help
        return ApiError(422, str(exc), code="non_finite_output")
    if isinstance(exc, IndexBusyError):
        return ApiError(503, str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, IndexFullError):
        log.error("index write failed: %s", exc)
        return ApiError(507, str(exc))
    if isinstance(exc, NotFoundError):
        return ApiError(404, str(exc))
    if isinstance(exc, InputError):
        return ApiError(422, str(exc))
    if isinstance(exc, MissingExtraError):
        return ApiError(501, str(exc))
    if isinstance(exc, IndexStoreError | DistilmarcoError):
        log.error("request failed: %s", exc)
        return ApiError(500, f"{type(exc).__name__}: {exc}")
    # Anything else is a fault in our code, never the client's: log it, say nothing of it.
    log.error("internal error", exc_info=exc)
    return ApiError(500, "internal server error")


def validation_message(errors: list[Mapping]) -> tuple[int, str, str | None]:
    """(status, message, param) for pydantic/FastAPI validation errors; never echoes inputs."""
    parts, param = [], None
    status = 422
    for e in errors[:5]:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        if e.get("type") == "json_invalid":
            status = 400
            parts.append(
                f"the body is not valid JSON ({e.get('ctx', {}).get('error', 'bad syntax')})"
            )
            continue
        where = ".".join(loc) or "body"
        param = param or where
        parts.append(f"{where}: {e.get('msg', 'invalid value')}")
    if len(errors) > 5:
        parts.append(f"... and {len(errors) - 5} more")
    return status, "; ".join(parts) or "invalid request", param
