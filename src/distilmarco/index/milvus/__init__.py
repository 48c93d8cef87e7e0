"""The index's storage on a Milvus collection (``milvus://HOST:PORT/COLLECTION``); needs the
``milvus`` extra (``pymilvus``), imported only when such an index is opened."""

from distilmarco.index.milvus.address import MilvusAddress, is_milvus

__all__ = ["MilvusAddress", "is_milvus"]
