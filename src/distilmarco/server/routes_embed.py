"""``POST /v1/embeddings`` (OpenAI), ``POST /embed`` and ``POST /similarity`` (text-embeddings-inference)."""

from __future__ import annotations

import base64
import json

import numpy as np
from fastapi import FastAPI, Request
from starlette.responses import Response

from distilmarco.server.http_errors import ApiError
from distilmarco.server.schemas import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    ErrorResponse,
    ModelList,
    OpenAIError,
    SimilarityRequest,
)
from distilmarco.server.service import EmbeddingService
from distilmarco.vectors import pair_scores, prepare

_OPENAI_ERRORS: dict[int | str, dict] = {
    code: {"model": OpenAIError} for code in (400, 401, 413, 422, 429, 503)
}
_ERRORS: dict[int | str, dict] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 429, 503)
}


def json_response(content: object, status: int = 200) -> Response:
    """Compact JSON; refuses NaN/Infinity rather than writing invalid JSON."""
    try:
        body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:  # NaN or Infinity: a server fault, never invalid JSON
        raise ApiError(500, f"the response held a non-finite number: {exc}") from exc
    return Response(body.encode("utf-8"), status_code=status, media_type="application/json")


def add_embedding_routes(router: FastAPI, service: EmbeddingService, model_name: str) -> None:
    cosine = service.encoder.similarity == "cosine"
    dimension = service.encoder.dimension

    @router.post(
        "/v1/embeddings",
        response_model=EmbeddingsResponse,
        responses=_OPENAI_ERRORS,
        tags=["OpenAI"],
        summary="Embeddings, OpenAI-compatible",
    )
    async def openai_embeddings(req: EmbeddingsRequest, request: Request) -> Response:
        """Vectors for ``input``. Unit length when the model compares by cosine (as OpenAI's are)."""
        if req.dimensions is not None and req.dimensions != dimension:
            raise ApiError(
                422,
                f"dimensions {req.dimensions} is not supported: this model gives {dimension}",
                param="dimensions",
            )
        texts = [req.input] if isinstance(req.input, str) else req.input
        out = await service.embed(
            texts, truncate=None, normalize=cosine, param="input", receive=request.receive
        )
        if req.encoding_format == "base64":
            little = out.vectors.astype("<f4", copy=False)
            items: list = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
        else:
            items = out.vectors.tolist()
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(items)]
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": model_name,
                "usage": {"prompt_tokens": out.tokens, "total_tokens": out.tokens},
            }
        )

    @router.get("/v1/models", response_model=ModelList, tags=["OpenAI"], summary="The served model")
    async def openai_models() -> Response:
        """OpenAI ``GET /v1/models``: one entry, the model this server runs."""
        entry = {"id": model_name, "object": "model", "created": 0, "owned_by": "distilmarco"}
        return json_response({"object": "list", "data": [entry]})

    @router.post(
        "/embed",
        response_model=list[list[float]],
        responses=_ERRORS,
        tags=["text-embeddings-inference"],
        summary="Embeddings, TEI-compatible",
    )
    async def tei_embed(req: EmbedRequest, request: Request) -> Response:
        """One vector per input (a list of lists even for one string)."""
        texts = [req.inputs] if isinstance(req.inputs, str) else req.inputs
        out = await service.embed(
            texts,
            truncate=req.truncate,
            normalize=req.normalize,
            param="inputs",
            receive=request.receive,
        )
        return json_response(out.vectors.tolist())

    @router.post(
        "/similarity",
        response_model=list[float],
        responses=_ERRORS,
        tags=["text-embeddings-inference"],
        summary="Score a source sentence against others",
    )
    async def similarity(req: SimilarityRequest, request: Request) -> Response:
        """The model's own similarity (cosine for msmarco-distilbert-base-v4), one per sentence."""
        texts = [req.inputs.source_sentence, *req.inputs.sentences]
        out = await service.embed(
            texts, truncate=req.truncate, normalize=False, param="inputs", receive=request.receive
        )
        scores = score(out.vectors[0], out.vectors[1:], service.encoder.similarity)
        return json_response([float(x) for x in scores])


def score(query: np.ndarray, others: np.ndarray, similarity: str) -> np.ndarray:
    """Scores of ``query`` (D,) against ``others`` (N, D); higher is more similar."""
    q, m = prepare(query[None, :], similarity), prepare(others, similarity)
    found = pair_scores(m, np.broadcast_to(q, m.shape), similarity)
    # float rounding may put a cosine a hair outside [-1, 1]; clients may rely on the range
    return np.clip(found, -1.0, 1.0) if similarity == "cosine" else found
