"""The HNSW cache of an index's chunk vectors: FAISS graphs rebuilt from the store whenever in
doubt (the store always wins).

``config`` the tunables (``AnnConfig``); ``index`` ``AnnIndex`` (add, remove, parallel search of
the parts); ``part`` one FAISS graph with its keys and tombstones; ``rotation`` the basis Panorama
parts hold their vectors in; ``ef_search`` each part's FAISS efSearch; ``compaction`` rebuilding parts
whose slots are mostly tombstones; ``header`` and ``file`` the file format, its saving and its
checked loading; ``native`` FAISS, threads and huge pages; ``status`` what stats report.
"""

from distilmarco.index.ann.config import AnnConfig
from distilmarco.index.ann.header import AnnStamp, read_stamp
from distilmarco.index.ann.index import METRICS, AnnIndex
from distilmarco.index.ann.status import AnnEvent, AnnFileStats

__all__ = ["METRICS", "AnnConfig", "AnnEvent", "AnnFileStats", "AnnIndex", "AnnStamp", "read_stamp"]
