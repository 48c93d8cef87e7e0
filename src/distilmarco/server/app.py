"""``create_app(settings, encoder, index=None)``: the FastAPI application.

Layers, outermost first: metrics -> host and path checks -> CORS (only when origins are
configured) -> API key (only when one is set) -> body limit -> routes. Library errors turn into
HTTP answers in ``http_errors``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import HTMLResponse, Response

import distilmarco
from distilmarco.encoder import Encoder
from distilmarco.errors import DistilmarcoError
from distilmarco.index.identity import display_name, folder_fingerprint
from distilmarco.server.auth import ApiKeyMiddleware
from distilmarco.server.guards import RequestGuardMiddleware, allowed_hosts
from distilmarco.server.http_errors import (
    ApiError,
    error_response,
    from_library,
    validation_message,
)
from distilmarco.server.limits import BodyLimitMiddleware
from distilmarco.server.metrics import Metrics, MetricsMiddleware
from distilmarco.server.routes_embed import add_embedding_routes, json_response
from distilmarco.server.schemas import Health, Info
from distilmarco.server.service import EmbeddingService
from distilmarco.server.settings import ServerSettings

log = logging.getLogger(__name__)


def _add_offline_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI's files from the ``swagger-ui-bundle`` package, so it works
    without network access; without that package there is no ``/docs`` (``/openapi.json`` stays)."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        log.info("swagger-ui-bundle is not installed: no /docs (the schema is at /openapi.json)")
        return
    from fastapi.openapi.docs import get_swagger_ui_html
    from starlette.staticfiles import StaticFiles

    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )


def create_app(
    settings: ServerSettings,
    encoder: Encoder,
    index: Any = None,
    *,
    close_index: bool = False,
    reranker: Any = None,
) -> FastAPI:
    """A ready-to-serve app; the inference worker starts and warms up in the app's lifespan.

    With ``close_index`` the index is closed when the app stops (WAL checkpointed, an in-memory
    ANN cache saved): for a server that owns it."""
    settings = settings.validate()
    metrics = Metrics()
    service = EmbeddingService(encoder, settings, metrics)
    model_name = settings.model_name or display_name(encoder.model_id)
    fingerprint = folder_fingerprint(encoder.spec.folder)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            # uvicorn has already let in-flight requests finish; drain the queue and stop.
            await asyncio.to_thread(service.stop)
            if close_index and index is not None:
                await asyncio.to_thread(index.close)

    app = FastAPI(
        title="distilmarco",
        version=distilmarco.__version__,
        summary=f"Sentence embeddings with {model_name}: OpenAI- and TEI-compatible",
        lifespan=lifespan,
        docs_url=None,  # served from local files below: the default loads Swagger UI from a CDN
        redoc_url=None,
    )
    _add_offline_docs(app)
    app.state.service = service
    app.state.metrics = metrics
    app.state.settings = settings
    _install_error_handlers(app)

    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> Response:
        """200 once warm-up has run; 503 while starting or stopping."""
        if service.ready:
            return json_response({"status": "ok"})
        status = "stopping" if service.stopping else "starting"
        return json_response({"status": status}, status=503)

    @app.get("/info", response_model=Info, tags=["service"])
    async def info() -> Response:
        """Model, dimensions, maximum length, backend, precision and the server's limits."""
        facts = encoder.info
        limits = {
            k: v for k, v in asdict(settings).items() if k.startswith("max_") or k in ("truncate",)
        }
        index_facts = None
        if index is not None:
            index_facts = {"documents": await asyncio.to_thread(index.count)}
        return json_response(
            {
                "model_id": display_name(facts.model_id),
                "model_name": model_name,
                "fingerprint": fingerprint,
                "revision": facts.revision,
                "architecture": facts.architecture,
                "dimension": facts.dimension,
                "max_seq_length": facts.max_seq_length,
                "similarity": facts.similarity,
                "normalized": facts.normalized,
                "pooling": list(facts.pooling),
                "backend": facts.backend,
                "precision": facts.precision,
                "device": facts.device,
                "limits": limits,
                "index": index_facts,
                "version": distilmarco.__version__,
            }
        )

    @app.get(
        "/metrics",
        tags=["service"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def prometheus() -> Response:
        """Prometheus text format: requests, latency, queue, batches, truncations, errors."""
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = (
            resources.files("distilmarco.server").joinpath("static/index.html").read_text("utf-8")
        )
        return HTMLResponse(html)

    add_embedding_routes(app, service, model_name)
    if index is not None:
        from distilmarco.server.routes_index import add_index_routes

        add_index_routes(app, service, index, settings)
    if reranker is not None:  # a cross-encoder: POST /rerank and /v1/rerank
        from distilmarco.server.routes_rerank import add_rerank_routes

        add_rerank_routes(app, reranker, settings, metrics, display_name(reranker.model_id))

    known = {getattr(r, "path", "") for r in app.routes}
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(
        RequestGuardMiddleware, hosts=allowed_hosts(settings.host, settings.allowed_hosts)
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=lambda: known)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        return error_response(request.url.path, from_library(exc))

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        status, message, param = validation_message(list(exc.errors()))
        return error_response(request.url.path, ApiError(status, message, param=param))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        return error_response(
            request.url.path, ApiError(exc.status_code, str(exc.detail), headers=headers)
        )

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for kind in (ApiError, DistilmarcoError):
        app.add_exception_handler(kind, api_error)
    # Any other exception is a bug: a logged 500 with the same JSON shape (never a 422).
    app.add_exception_handler(Exception, api_error)
