"""``POST /search`` and the document routes, when an index is attached.

Route work runs in a thread pool: the model work inside it (a search's query, a write's passages)
goes through the shared fair queue like any embedding request, so the inference thread never
waits on SQLite, and a writer blocked on another process's lock holds up no one else.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from starlette.responses import Response

from distilmarco.errors import NotFoundError
from distilmarco.index import Hit, Index
from distilmarco.server.http_errors import ApiError
from distilmarco.server.limits import check_texts, check_unicode
from distilmarco.server.routes_embed import json_response
from distilmarco.server.schemas import (
    DocumentIn,
    DocumentOut,
    DocumentsBatch,
    ErrorResponse,
    SearchRequest,
    SearchResponse,
    WriteResult,
)
from distilmarco.server.service import EmbeddingService
from distilmarco.server.settings import ServerSettings

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 413, 422, 429, 503)
}


def add_index_routes(
    app: FastAPI, service: EmbeddingService, index: Index, settings: ServerSettings
) -> None:
    embed = service.embed_blocking
    index.store.set_busy_timeout(settings.index_lock_wait_s)

    @app.post("/search", response_model=SearchResponse, responses=_ERRORS, tags=["index"])
    async def search(req: SearchRequest) -> Response:
        """The ``k`` best documents for ``query``, each with its best passage (dense, bm25, hybrid)."""
        check_texts([req.query], 1, settings.max_input_chars, "query")
        check_unicode(req.where, "where")
        if req.k > settings.max_k:
            raise ApiError(422, f"k {req.k} is larger than the limit {settings.max_k}", param="k")

        def run() -> list[dict[str, Any]]:
            hits = index.search(req.query, req.k, where=req.where, mode=req.mode, embed=embed)
            return [_hit(h, index.get(h.id).text if req.include_text else None) for h in hits]

        results = await asyncio.to_thread(run)
        return json_response({"query": req.query, "mode": req.mode, "results": results})

    @app.get("/documents/{id:path}", response_model=DocumentOut, responses=_ERRORS, tags=["index"])
    async def get_document(id: str) -> Response:
        """One stored document: id, text, metadata."""
        check_unicode(id, "id")
        try:
            doc = await asyncio.to_thread(index.get, id)
        except NotFoundError:
            raise ApiError(404, f"no document with id {id!r}") from None
        return json_response({"id": doc.id, "text": doc.text, "metadata": doc.metadata})

    @app.put("/documents/{id:path}", response_model=WriteResult, responses=_ERRORS, tags=["index"])
    async def put_document(id: str, doc: DocumentIn) -> Response:
        """Add or replace one document (chunked and embedded before it is written)."""
        check_texts([doc.text], 1, settings.max_body_bytes, "text")
        check_unicode([id, doc.metadata], "document")
        rows = await asyncio.to_thread(index.prepare, [id], [doc.text], [doc.metadata], embed=embed)
        written = await asyncio.to_thread(index.write, rows, replace=True)
        return json_response({"ids": [id], "count": written})

    @app.delete(
        "/documents/{id:path}", response_model=WriteResult, responses=_ERRORS, tags=["index"]
    )
    async def delete_document(id: str) -> Response:
        """Remove one document; 404 when it does not exist."""
        check_unicode(id, "id")
        removed = await asyncio.to_thread(index.delete, [id])
        if not removed:
            raise ApiError(404, f"no document with id {id!r}")
        return json_response({"ids": [id], "count": removed})

    @app.post(
        "/documents", response_model=WriteResult, responses=_ERRORS, tags=["index"], status_code=201
    )
    async def add_documents(batch: DocumentsBatch) -> Response:
        """Add many documents in one transaction; ids that exist are a 409 unless ``upsert``."""
        docs = batch.documents
        if len(docs) > settings.max_inputs:
            raise ApiError(
                413,
                f"{len(docs)} documents; at most {settings.max_inputs} per request",
                param="documents",
            )
        check_texts([d.text for d in docs], settings.max_inputs, settings.max_body_bytes, "text")
        ids = [d.id for d in docs]
        check_unicode([ids, [d.metadata for d in docs]], "documents")

        def run() -> int:
            if not batch.upsert:
                taken = sorted(index.content_hashes(ids))
                if taken:
                    shown = ", ".join(repr(i) for i in taken[:5])
                    raise ApiError(409, f"{len(taken)} id(s) already exist: {shown}")
            texts, metas = [d.text for d in docs], [d.metadata for d in docs]
            return index.write(index.prepare(ids, texts, metas, embed=embed), replace=batch.upsert)

        written = await asyncio.to_thread(run)
        return json_response({"ids": ids, "count": written}, status=201)


def _hit(hit: Hit, text: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": hit.id,
        "score": float(hit.score),
        "passage": hit.passage,
        "start": hit.start,
        "end": hit.end,
        "metadata": hit.metadata,
    }
    if text is not None:
        out["text"] = text
    return out
