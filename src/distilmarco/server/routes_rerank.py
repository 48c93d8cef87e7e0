"""``POST /rerank`` (text-embeddings-inference) and ``POST /v1/rerank`` (Cohere / Jina shape).

A cross-encoder has its own inference worker and fair token queue (a second ``MicroBatcher``,
with the server's limits), so re-ranking requests batch across clients like embedding requests
and shed load with 429 the same way. The batcher carries token ids only: each pair's token types
ride in the ids' upper 32 bits and are split off on the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from starlette.responses import Response
from starlette.types import Receive

from distilmarco.reranker import Reranker, apply_activation
from distilmarco.server.batching import MicroBatcher, QueueFullError
from distilmarco.server.http_errors import ApiError
from distilmarco.server.limits import check_texts
from distilmarco.server.metrics import Metrics
from distilmarco.server.routes_embed import json_response
from distilmarco.server.schemas import ErrorResponse, OpenAIError, Strict
from distilmarco.server.service import INLINE_TOKENIZE_CHARS, until_disconnected
from distilmarco.server.settings import ServerSettings

log = logging.getLogger(__name__)

_TYPE_SHIFT = 32
_ID_MASK = (1 << _TYPE_SHIFT) - 1
_ERRORS: dict[int | str, dict] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 429, 503)
}
_V1_ERRORS: dict[int | str, dict] = {
    code: {"model": OpenAIError} for code in (400, 401, 413, 422, 429, 503)
}


# --- request and response bodies --------------------------------------------------------------


class TeiRerankRequest(Strict):
    """TEI ``POST /rerank``: ``texts`` scored against ``query``, best first."""

    query: str
    texts: list[str] = Field(description="Passages to score; at least one")
    truncate: bool | None = Field(
        None, description="Cut pairs longer than the model's limit (default: the server's policy)"
    )
    truncation_direction: Literal["Right", "right"] = "Right"
    raw_scores: bool = Field(False, description="Logits instead of the model's activation")
    return_text: bool = False


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class V1Document(Strict):
    text: str


class V1RerankRequest(Strict):
    """Cohere / Jina ``POST /v1/rerank``. ``model`` is accepted; the served model answers."""

    query: str
    documents: list[str | V1Document] = Field(description="Passages (or {text}); at least one")
    model: str | None = None
    top_n: int | None = Field(None, ge=1, description="How many results (default: all)")
    return_documents: bool = False
    truncate: bool | None = None


class V1Result(BaseModel):
    index: int
    relevance_score: float
    document: V1Document | None = None


class V1Usage(BaseModel):
    total_tokens: int


class V1RerankResponse(BaseModel):
    model: str
    results: list[V1Result]
    usage: V1Usage


# --- the service ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    logits: np.ndarray  # float32 (N, num_labels)
    tokens: int


class RerankService:
    """Validates, tokenises and queues (query, passage) pairs for one cross-encoder."""

    def __init__(self, reranker: Reranker, settings: ServerSettings, metrics: Metrics) -> None:
        self.reranker = reranker
        self.settings = settings
        self.metrics = metrics
        backend = reranker.backend

        def run(packed: np.ndarray, mask: np.ndarray) -> np.ndarray:
            return backend.logits(packed & _ID_MASK, mask, packed >> _TYPE_SHIFT)

        self.batcher = MicroBatcher(
            run,
            reranker.tokenizer.pad_id,
            max_batch_tokens=settings.max_batch_tokens,
            run_tokens=reranker.batch_tokens,
            max_queue_tokens=settings.max_queue_tokens,
            max_queue_wait_s=settings.max_queue_wait_s,
            max_wait_s=settings.max_wait_ms / 1000.0,
        )

    async def score(
        self,
        query: str,
        passages: list[str],
        *,
        truncate: bool | None,
        param: str,
        receive: Receive,
    ) -> Scored:
        s = self.settings
        check_texts([query], 1, s.max_input_chars, "query")
        check_texts(passages, s.max_inputs, s.max_input_chars, param)
        encode = self.reranker.tokenizer.encode_pairs
        if len(query) + sum(len(p) for p in passages) <= INLINE_TOKENIZE_CHARS:
            pairs = encode(query, passages)
        else:
            pairs = await asyncio.to_thread(encode, query, passages)
        truncated = int(pairs.truncated.sum())
        allow = s.truncate if truncate is None else truncate
        if truncated and not allow:
            first = int(np.argmax(pairs.truncated))
            raise ApiError(
                422,
                f"query and {param}[{first}] together are longer than the model's limit of "
                f"{self.reranker.max_seq_length} tokens; shorten them or allow truncation",
                param=param,
                code="context_length_exceeded",
            )
        if truncated:
            self.metrics.truncated.inc(truncated)
        packed = [
            ids | (types << _TYPE_SHIFT)
            for ids, types in zip(pairs.ids, pairs.type_ids, strict=True)
        ]
        try:
            future = self.batcher.submit(packed)
        except QueueFullError:
            self.metrics.rejected.inc()
            raise
        result = asyncio.wrap_future(future)
        watcher = asyncio.ensure_future(until_disconnected(receive))
        try:
            waiting: set[asyncio.Future[Any]] = {result, watcher}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self.batcher.cancel(future)
            raise
        finally:
            watcher.cancel()
        if result not in done:
            self.batcher.cancel(future)
            self.metrics.abandoned.inc()
            raise ApiError(499, "the client closed the connection; its request was dropped")
        return Scored(result.result(), int(pairs.lengths.sum()))

    def scores(self, logits: np.ndarray, raw: bool) -> np.ndarray:
        """(N,) scores of a one-label model: the model's activation unless ``raw``."""
        if self.reranker.num_labels != 1:
            raise ApiError(
                422,
                f"the re-ranking model has {self.reranker.num_labels} output labels; "
                "ranking needs one",
            )
        out = logits if raw else apply_activation(logits, self.reranker.activation)
        return out[:, 0]


def order(scores: np.ndarray) -> list[int]:
    """Indices by descending score, ties in input order."""
    return [int(i) for i in np.argsort(-scores, kind="stable")]


# --- routes -----------------------------------------------------------------------------------


def add_rerank_routes(
    app: FastAPI, reranker: Reranker, settings: ServerSettings, metrics: Metrics, name: str
) -> None:
    """Register both routes and run the re-ranking worker for the app's lifetime."""
    service = RerankService(reranker, settings, metrics)
    app.state.rerank_service = service
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        service.batcher.start()
        try:
            async with inner(application) as state:
                yield state
        finally:
            await asyncio.to_thread(service.batcher.close, 30.0)

    app.router.lifespan_context = lifespan

    @app.post(
        "/rerank",
        response_model=list[TeiRank],
        responses=_ERRORS,
        tags=["text-embeddings-inference"],
        summary="Re-rank texts for a query, TEI-compatible",
    )
    async def tei_rerank(req: TeiRerankRequest, request: Request) -> Response:
        """The cross-encoder's score of each text with the query, best first."""
        out = await service.score(
            req.query, req.texts, truncate=req.truncate, param="texts", receive=request.receive
        )
        scores = service.scores(out.logits, req.raw_scores)
        items = []
        for i in order(scores):
            item: dict[str, object] = {"index": i, "score": float(scores[i])}
            if req.return_text:
                item["text"] = req.texts[i]
            items.append(item)
        return json_response(items)

    @app.post(
        "/v1/rerank",
        response_model=V1RerankResponse,
        responses=_V1_ERRORS,
        tags=["Cohere / Jina"],
        summary="Re-rank documents for a query, Cohere- and Jina-compatible",
    )
    async def v1_rerank(req: V1RerankRequest, request: Request) -> Response:
        """``results`` best first, ``top_n`` of them; ``relevance_score`` is the model's score."""
        texts = [d if isinstance(d, str) else d.text for d in req.documents]
        out = await service.score(
            req.query, texts, truncate=req.truncate, param="documents", receive=request.receive
        )
        scores = service.scores(out.logits, raw=False)
        results = []
        for i in order(scores)[: req.top_n]:
            result: dict[str, object] = {"index": i, "relevance_score": float(scores[i])}
            if req.return_documents:
                result["document"] = {"text": texts[i]}
            results.append(result)
        return json_response(
            {"model": name, "results": results, "usage": {"total_tokens": out.tokens}}
        )
