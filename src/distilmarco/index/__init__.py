"""The embedded semantic search index: one SQLite file, exact/HNSW/BM25/hybrid search."""

from distilmarco.index.core import Document, Hit, Index, IndexStats

__all__ = ["Document", "Hit", "Index", "IndexStats"]
