"""The collection layout: one row per passage, keyed ``doc_id#n``, and how rows are built.

Fields: ``id`` (primary key), ``doc_id``, ``passage`` (n), ``passages`` (the document's count),
``start``/``end`` (character offsets), ``text`` (the passage, analysed for Milvus's BM25
function into ``sparse``), ``document`` (the full text on passage 0, empty on the others),
``content_hash``, ``metadata`` (JSON), ``added`` (when the document was first written, for
insertion order) and ``vector``. The model's identity and the write sequence are collection
properties.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from distilmarco.errors import InputError
from distilmarco.index.storage import DocumentRow

if TYPE_CHECKING:
    from pymilvus import MilvusClient

MAX_ID_BYTES = 1_024
MAX_TEXT_BYTES = 65_535  # Milvus's largest VARCHAR
META_PROPERTY = "distilmarco.meta"  # JSON of the model identity and chunking
SEQ_PROPERTY = "distilmarco.seq"
METRICS = {"cosine": "IP", "dot": "IP"}  # cosine vectors are stored unit length: IP is cosine
BM25_K1, BM25_B = 1.2, 0.75  # the SQLite index's FTS5 parameters
FIELDS = ("id", "doc_id", "passage", "passages", "start", "end", "text", "document",
          "content_hash", "metadata", "added")  # fmt: skip


@dataclass(frozen=True)
class PassageRow:
    """One passage as stored in the collection."""

    doc_id: str
    passage: int
    passages: int
    start: int
    end: int
    text: str
    document: str  # the full text on passage 0, "" on the others
    content_hash: str
    metadata_json: str
    added: int
    vector: np.ndarray  # (D,) float32, prepared for the similarity

    @property
    def id(self) -> str:
        return f"{self.doc_id}#{self.passage}"

    def entity(self) -> dict[str, Any]:
        """The row as ``MilvusClient.upsert`` takes it."""
        return {
            "id": self.id,
            "doc_id": self.doc_id,
            "passage": self.passage,
            "passages": self.passages,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "document": self.document,
            "content_hash": self.content_hash,
            "metadata": json.loads(self.metadata_json),
            "added": self.added,
            "vector": self.vector.tolist(),
        }


def passage_rows(doc: DocumentRow, added: int) -> list[PassageRow]:
    """A document's passages as rows, its full text on the first."""
    check_sizes(doc.id, doc.text)
    n = len(doc.chunks)
    return [
        PassageRow(
            doc.id,
            i,
            n,
            c.start,
            c.end,
            doc.text[c.start : c.end],
            doc.text if i == 0 else "",
            doc.content_hash,
            doc.metadata_json,
            added,
            c.vector,
        )
        for i, c in enumerate(doc.chunks)
    ]


def check_sizes(doc_id: str, text: str) -> None:
    """Refuse what a Milvus VARCHAR cannot hold, naming the document."""
    if len(doc_id.encode("utf-8")) > MAX_ID_BYTES:
        raise InputError(f"id {doc_id[:40]!r}... is longer than {MAX_ID_BYTES} bytes")
    if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise InputError(
            f"document {doc_id!r} holds {len(text.encode('utf-8'))} bytes of text; a Milvus "
            f"text field holds at most {MAX_TEXT_BYTES}: split it into several documents"
        )


def create_collection(
    client: MilvusClient, name: str, dimension: int, similarity: str, index_type: str
) -> None:
    """A new collection for vectors of ``dimension`` compared by ``similarity``."""
    from pymilvus import DataType, Function, FunctionType

    if similarity not in METRICS:
        raise InputError(
            f"a Milvus index stores models compared by {' or '.join(METRICS)}; this model uses "
            f"{similarity}"
        )
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES + 16)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=MAX_ID_BYTES)
    for name_ in ("passage", "passages", "start", "end"):
        schema.add_field(name_, DataType.INT32)
    schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES, enable_analyzer=True)
    schema.add_field("document", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
    schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("added", DataType.INT64)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
    schema.add_function(
        Function(
            name="text_bm25",
            function_type=FunctionType.BM25,
            input_field_names=["text"],
            output_field_names=["sparse"],
        )
    )
    index = client.prepare_index_params()
    index.add_index("vector", index_type=index_type, metric_type=METRICS[similarity])
    index.add_index(
        "sparse",
        index_type="SPARSE_INVERTED_INDEX",
        metric_type="BM25",
        params={"bm25_k1": BM25_K1, "bm25_b": BM25_B},
    )
    index.add_index("doc_id", index_type="INVERTED")
    client.create_collection(name, schema=schema, index_params=index)


def stale_ids(old_counts: dict[str, int], rows: Sequence[PassageRow]) -> list[str]:
    """Passage keys an earlier, longer version of a document left beyond its new count."""
    new_counts = {r.doc_id: r.passages for r in rows}
    return [
        f"{doc}#{n}"
        for doc, old in old_counts.items()
        if doc in new_counts
        for n in range(new_counts[doc], old)
    ]
