"""``distilmarco serve``: the HTTP server. Every flag can also come from a DISTILMARCO_* variable."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import typer

from distilmarco.cli.app import app, err, styled
from distilmarco.model.hub import DEFAULT_MODEL

log = logging.getLogger(__name__)


def _env(name: str) -> str:
    return f"DISTILMARCO_{name}"


@app.command(
    epilog="\b\nExample: distilmarco serve --model msmarco-distilbert-base-v4 --index docs.db --port 8080"
)
def serve(
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", "-m", envvar=_env("MODEL"), help="Hub id or local folder"
    ),
    index: Path | None = typer.Option(
        None,
        envvar=_env("INDEX"),
        help="Index file or milvus://HOST:PORT/COLLECTION to search and edit (enables /search)",
    ),
    host: str = typer.Option("127.0.0.1", envvar=_env("HOST"), help="Address to bind"),
    port: int = typer.Option(8080, envvar=_env("PORT"), help="TCP port"),
    api_key: str | None = typer.Option(
        None, envvar=_env("API_KEY"), help="Require 'Authorization: Bearer KEY'"
    ),
    cors_origin: list[str] = typer.Option(
        [],
        envvar=_env("CORS_ORIGINS"),
        help="Allowed browser origin (repeatable); CORS is off without",
    ),
    backend: str | None = typer.Option(
        None,
        envvar=_env("BACKEND"),
        help="auto, torch, onnx or openvino (default: auto; with --index: as recorded)",
    ),
    precision: str | None = typer.Option(
        None,
        envvar=_env("PRECISION"),
        help="fp32 (exact), int8, fp16 or bf16 (default: fp32; with --index: as recorded)",
    ),
    device: str = typer.Option("cpu", envvar=_env("DEVICE"), help="cpu, cuda, mps or auto"),
    threads: int | None = typer.Option(None, envvar=_env("THREADS"), help="Torch CPU threads"),
    max_batch_tokens: int = typer.Option(
        16384,
        envvar=_env("MAX_BATCH_TOKENS"),
        help="Real tokens taken from the queue at once (run in batches the backend is fastest at)",
    ),
    max_wait_ms: float = typer.Option(
        2.0, envvar=_env("MAX_WAIT_MS"), help="Longest wait for a batch to fill"
    ),
    max_queue_tokens: int = typer.Option(
        131072, envvar=_env("MAX_QUEUE_TOKENS"), help="Queued tokens before answering 429"
    ),
    max_queue_wait: float = typer.Option(
        5.0,
        envvar=_env("MAX_QUEUE_WAIT"),
        help="Seconds a new request may expect to wait (at the measured speed) before 429",
    ),
    index_lock_wait: float = typer.Option(
        5.0,
        envvar=_env("INDEX_LOCK_WAIT"),
        help="Seconds an index write waits for another writer's lock before 503",
    ),
    allowed_hosts: list[str] = typer.Option(
        [],
        "--allowed-hosts",
        envvar=_env("ALLOWED_HOSTS"),
        help="Host header names to answer (repeatable; '*' for any). Default: loopback names "
        "when bound to loopback, else any",
    ),
    max_body_bytes: int = typer.Option(
        8 * 1024 * 1024, envvar=_env("MAX_BODY_BYTES"), help="Largest request body"
    ),
    max_inputs: int = typer.Option(2048, envvar=_env("MAX_INPUTS"), help="Texts per request"),
    max_input_chars: int = typer.Option(
        32768, envvar=_env("MAX_INPUT_CHARS"), help="Characters per text"
    ),
    truncate: bool = typer.Option(
        True, envvar=_env("TRUNCATE"), help="Cut over-long inputs (else 422) unless a request says"
    ),
    model_name: str | None = typer.Option(
        None, envvar=_env("MODEL_NAME"), help="Model name reported to OpenAI clients"
    ),
    graceful_timeout: int = typer.Option(
        30, envvar=_env("GRACEFUL_TIMEOUT"), help="Seconds to finish in-flight requests on stop"
    ),
    keep_alive: int = typer.Option(
        75,
        envvar=_env("KEEP_ALIVE"),
        help="Seconds an idle connection stays open (longer than clients' pools keep theirs)",
    ),
    log_level: str = typer.Option("info", envvar=_env("LOG_LEVEL"), help="uvicorn log level"),
    rerank_model: str | None = typer.Option(
        None,
        "--rerank-model",
        envvar=_env("RERANK_MODEL"),
        help="Cross-encoder (Hub id or folder) to serve POST /rerank and /v1/rerank with",
    ),
) -> None:
    """Serve embeddings (OpenAI and TEI APIs), similarity, search and a search page over HTTP."""
    try:
        import uvicorn

        from distilmarco.server import ServerSettings, create_app
    except ImportError as exc:
        from distilmarco.errors import MissingExtraError

        raise MissingExtraError(exc.name or "fastapi", "server", "distilmarco serve") from exc
    from distilmarco.index.identity import Engine

    settings = ServerSettings(
        host=host,
        port=port,
        api_key=api_key or None,
        cors_origins=tuple(cors_origin),
        max_batch_tokens=max_batch_tokens,
        max_wait_ms=max_wait_ms,
        max_queue_tokens=max_queue_tokens,
        max_queue_wait_s=max_queue_wait,
        index_lock_wait_s=index_lock_wait,
        allowed_hosts=tuple(allowed_hosts),
        max_body_bytes=max_body_bytes,
        max_inputs=max_inputs,
        max_input_chars=max_input_chars,
        truncate=truncate,
        model_name=model_name,
    ).validate()
    how = Engine(backend, precision, device, threads=threads)
    opened = None
    if index is not None:  # queries are embedded the way the index was (its recorded engine)
        from distilmarco.index import Index

        opened = Index(index, model, engine=how)
        encoder = opened.encoder
    else:
        encoder = how.encoder(model)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        err.print(styled(("warning:", "yellow"), f" listening on {host} without an API key"))
    err.print(f"serving {encoder.model_id} on http://{host}:{port}  (docs: /docs)", highlight=False)
    # uvicorn stops gracefully on SIGTERM, then raises the signal again to die by it (status 143);
    # a handler of our own receives that second one, so a clean stop exits 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: log.info("stopped by SIGTERM"))
    reranker = None
    if rerank_model is not None:  # same engine choices as the embedding model
        from distilmarco.reranker import Reranker

        reranker = Reranker(
            rerank_model,
            backend=backend or "auto",
            precision=precision or "fp32",
            device=device,
            threads=threads,
        )
    uvicorn.run(
        create_app(settings, encoder, opened, close_index=True, reranker=reranker),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=graceful_timeout,
        timeout_keep_alive=keep_alive,
        access_log=False,
    )
