"""The model side of an index: which encoder embeds it (given, or the recorded one loaded when first
needed), how its documents are cut into passages, and turning documents into rows to store."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from distilmarco.index.chunking import ChunkConfig, chunk_spans
from distilmarco.index.identity import (
    Engine,
    check_same_model,
    load_recorded_encoder,
    model_meta,
)
from distilmarco.index.storage import ChunkRow, DocumentRow, VectorSpace
from distilmarco.index.validate import content_hash
from distilmarco.vectors import prepare

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder

log = logging.getLogger(__name__)

EmbedFn = Callable[[list[str]], np.ndarray]  # texts -> raw (N, D) vectors, in place of the encoder


class IndexModel:
    """An index's encoder and chunking, checked against what the storage records (``meta``)."""

    def __init__(
        self,
        meta: Callable[[], dict[str, str]],
        engine: Engine,
        chunk_tokens: int | None = None,
        chunk_overlap: int | None = None,
    ) -> None:
        self._meta = meta
        self.engine = engine
        self._chunk_request = (chunk_tokens, chunk_overlap)
        self._encoder: Encoder | None = None
        self._chunking: ChunkConfig | None = None
        self._space: VectorSpace | None = None

    @property
    def encoder(self) -> Encoder:
        """The encoder; loads the model the index records if none was given."""
        if self._encoder is None:
            self.use(load_recorded_encoder(self._meta(), self.engine))
        assert self._encoder is not None
        return self._encoder

    def as_encoder(self, encoder: Encoder | str | os.PathLike[str]) -> Encoder:
        """An Encoder as given, or one for a model name on this index's engine (the recorded
        one, else ``auto`` at exact fp32)."""
        if isinstance(encoder, str | os.PathLike):
            return self.engine.encoder(encoder, recorded=self._meta())
        return encoder

    def use(self, encoder: Encoder) -> None:
        """Embed with ``encoder``, which must be the model the index records (if any)."""
        # An index from before fingerprints gets one recorded with its next write.
        check_same_model(self._meta(), model_meta(encoder))
        self._encoder = encoder
        meta = self._meta()
        window, overlap = self._chunk_request
        if "chunk_window" in meta and window is None and overlap is None:
            window, overlap = int(meta["chunk_window"]), int(meta["chunk_overlap"])
        self._chunking = ChunkConfig.for_model(encoder.max_seq_length, window, overlap)

    def switch(self, encoder: Encoder) -> None:
        """Embed with another model from now on (``reindex``): nothing is checked."""
        self._encoder, self._space = encoder, None
        window, overlap = self._chunk_request
        self._chunking = ChunkConfig.for_model(encoder.max_seq_length, window, overlap)

    @property
    def chunking(self) -> ChunkConfig:
        """How documents are cut into passages (needs the encoder's tokenizer and limit)."""
        if self._chunking is None:
            _ = self.encoder  # loading the recorded model sets the chunking
        assert self._chunking is not None
        return self._chunking

    def meta(self) -> dict[str, str]:
        """What a write records: the model's identity and the chunking."""
        return {
            **model_meta(self.encoder),
            "chunk_window": str(self.chunking.window),
            "chunk_overlap": str(self.chunking.overlap),
        }

    def space(self) -> VectorSpace:
        """The stored vectors' length and similarity: as recorded, else the encoder's."""
        if self._space is None:
            meta = self._meta()
            if "dimension" in meta:
                self._space = VectorSpace(int(meta["dimension"]), meta["similarity"])
            else:
                self._space = VectorSpace(self.encoder.dimension, self.encoder.similarity)
        return self._space

    def forget_space(self) -> None:
        """Read the space again from the storage (after it recorded another model's)."""
        self._space = None

    def embed_documents(
        self, ids: list[str], texts: list[str], metas: list[str], embed: EmbedFn | None = None
    ) -> list[DocumentRow]:
        """Chunk and embed (no lock held): the slow part of every write happens here."""
        spans = [self.spans(text) for text in texts]
        passages = [text[s:e] for text, doc in zip(texts, spans, strict=True) for s, e in doc]
        if not passages:
            return []
        if embed is not None:
            vectors = embed(passages)
        else:
            vectors, stats = self.encoder.encode_with_stats(passages, truncation="count")
            if stats.truncated:
                log.warning("%d passage(s) were re-tokenised past the model limit", stats.truncated)
        vectors = prepare(vectors, self.encoder.similarity)
        rows, at = [], 0
        for id_, text, meta, doc in zip(ids, texts, metas, spans, strict=True):
            chunks = tuple(ChunkRow(s, e, vectors[at + i]) for i, (s, e) in enumerate(doc))
            at += len(doc)
            rows.append(DocumentRow(id_, text, meta, content_hash(text), chunks))
        return rows

    def spans(self, text: str) -> list[tuple[int, int]]:
        """The passages of ``text`` as character spans."""
        if len(text) <= self.chunking.window // 2:  # a token covers >= 1 character: one chunk
            return [(0, len(text))]
        offsets = self.encoder.tokenizer.offsets(text)
        return chunk_spans(offsets, len(text), self.chunking)
