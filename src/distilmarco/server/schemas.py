"""Request and response bodies. Field names follow OpenAI (``/v1/embeddings``) and
text-embeddings-inference (``/embed``, ``/similarity``) so that their clients work unchanged."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Request bodies: no silent coercion (``0`` is not ``false``, ``"5"`` is not ``5``)."""

    model_config = ConfigDict(strict=True)


Texts = str | Annotated[list[str], Field(min_length=1)]


# --- OpenAI -------------------------------------------------------------------------------


class EmbeddingsRequest(Strict):
    """OpenAI ``POST /v1/embeddings``. ``model`` is accepted and the served model answers."""

    input: Texts = Field(description="A text or a list of texts")
    model: str | None = Field(
        None, description="Any name, or none: the served model answers and is named in the reply"
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        None, ge=1, description="Must equal the model's dimension when given"
    )
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(
        description="Floats, or base64 of little-endian float32 bytes"
    )


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


# --- text-embeddings-inference ------------------------------------------------------------


class EmbedRequest(Strict):
    """TEI ``POST /embed``: returns one vector per input, always a list of lists."""

    inputs: Texts
    normalize: bool = True
    truncate: bool | None = Field(
        None, description="Cut inputs longer than the model's limit (default: the server's policy)"
    )
    truncation_direction: Literal["Right", "right"] = "Right"


class SimilarityInputs(Strict):
    source_sentence: str
    sentences: list[str] = Field(min_length=1)


class SimilarityRequest(Strict):
    """TEI ``POST /similarity``: the source sentence scored against each sentence."""

    inputs: SimilarityInputs
    truncate: bool | None = None


class ErrorResponse(BaseModel):
    error: str
    error_type: str


# --- index --------------------------------------------------------------------------------


class SearchRequest(Strict):
    query: str = Field(min_length=1, description="What to look for")
    k: int = Field(10, ge=1, description="How many documents to return")
    where: dict[str, Any] | None = Field(
        None, description="Metadata filter: key -> value (or a list of accepted values)"
    )
    mode: Literal["dense", "bm25", "hybrid"] = "dense"
    include_text: bool = Field(False, description="Also return each document's full text")


class SearchHit(BaseModel):
    id: str
    score: float
    passage: str = Field(description="The best-matching passage: text[start:end] of the document")
    start: int
    end: int
    metadata: dict[str, Any] = Field(default_factory=dict)
    text: str | None = Field(None, description="The whole document, when include_text is set")


class SearchResponse(BaseModel):
    query: str
    mode: str
    results: list[SearchHit]


class DocumentIn(Strict):
    model_config = ConfigDict(strict=True, extra="forbid")

    text: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentWithId(DocumentIn):
    id: str = Field(min_length=1, max_length=512)


class DocumentsBatch(Strict):
    documents: list[DocumentWithId] = Field(min_length=1)
    upsert: bool = Field(False, description="Replace documents whose id exists (else 409)")


class DocumentOut(BaseModel):
    id: str
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class WriteResult(BaseModel):
    ids: list[str]
    count: int


# --- service ------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok", "starting", "stopping"]


class Info(BaseModel):
    model_id: str
    model_name: str
    fingerprint: str
    revision: str | None
    architecture: str
    dimension: int
    max_seq_length: int
    similarity: str
    normalized: bool
    pooling: list[str]
    backend: str
    precision: str  # what the backend runs: a bf16 request on a CPU without bf16 says fp32
    device: str
    limits: dict[str, int | float | bool]
    index: dict[str, Any] | None
    version: str
