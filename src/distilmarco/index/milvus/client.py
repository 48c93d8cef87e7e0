"""The connection to a Milvus server: ``pymilvus`` imported lazily, calls that fail named clearly."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from distilmarco.errors import IndexStoreError, MissingExtraError
from distilmarco.index.milvus.address import MilvusAddress, token_from_env
from distilmarco.index.milvus.filters import MilvusFilter, quote

if TYPE_CHECKING:
    from pymilvus import MilvusClient

IN_BATCH = 1_000  # ids per "doc_id in [...]" filter


def connect(address: MilvusAddress, timeout: float) -> MilvusClient:
    """A client for ``address``; a missing ``pymilvus`` names the extra to install."""
    try:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException
    except ImportError as exc:
        raise MissingExtraError(exc.name or "pymilvus", "milvus", "a milvus:// index") from exc
    try:
        return MilvusClient(uri=address.uri, token=token_from_env(), timeout=timeout)
    except MilvusException as exc:
        raise IndexStoreError(
            f"cannot reach the Milvus server of {address}: {exc.message}"
        ) from exc


@contextlib.contextmanager
def rpc(address: MilvusAddress, what: str) -> Iterator[None]:
    """Turn a failed Milvus call into an ``IndexStoreError`` naming the collection and the call."""
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except MilvusException as exc:
        raise IndexStoreError(f"{what} on {address} failed: {exc.message}") from exc


class Collection:
    """One collection's calls, with filters sent templated or as escaped literals."""

    def __init__(self, client: MilvusClient, address: MilvusAddress) -> None:
        self.client = client
        self.address = address
        self.name = address.collection
        self.timeout: float | None = None  # for writes (``set_busy_timeout``)
        self._templates: bool | None = None

    def templates(self) -> bool:
        """Whether the server takes expression templates (``filter_params``, Milvus 2.5 on);
        Milvus Lite's parser has none, so there values go as escaped literals."""
        if self._templates is None:
            with rpc(self.address, "asking the server's version"):
                version = str(self.client.get_server_version())
            found = re.match(r"v?(\d+)\.(\d+)", version)
            self._templates = found is not None and (int(found[1]), int(found[2])) >= (2, 5)
        return self._templates

    def query(self, filt: MilvusFilter, fields: Sequence[str], **kw: Any) -> list[dict[str, Any]]:
        with rpc(self.address, "a query"):
            return list(
                self.client.query(
                    self.name,
                    output_fields=list(fields),
                    **filt.search_args(self.templates()),
                    **kw,
                )
            )

    def count(self, filt: MilvusFilter) -> int:
        rows = self.query(filt, ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def by_docs(
        self, doc_ids: Sequence[str], fields: Sequence[str], extra: str = ""
    ) -> list[dict[str, Any]]:
        """Rows of the given documents (``extra``: a further condition on fixed fields)."""
        out: list[dict[str, Any]] = []
        for at in range(0, len(doc_ids), IN_BATCH):
            out.extend(self.query(docs_filter(doc_ids[at : at + IN_BATCH], extra), fields))
        return out

    def iterate(self, filt: MilvusFilter, fields: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Every matching row, in pages (``filt`` on fixed fields only: the iterator takes no
        template parameters)."""
        if filt.params:
            raise ValueError("iterate takes a filter without parameters")
        with rpc(self.address, "reading the collection"):
            it = self.client.query_iterator(
                self.name, batch_size=1_000, output_fields=list(fields), filter=filt.literal
            )
            try:
                while page := it.next():
                    yield from page
            finally:
                it.close()


def docs_filter(doc_ids: Sequence[str], extra: str = "") -> MilvusFilter:
    """``doc_id in [...]`` (and ``extra``), in both forms."""
    tail = f" and {extra}" if extra else ""
    literal = "doc_id in [" + ", ".join(quote(d) for d in doc_ids) + "]" + tail
    return MilvusFilter("doc_id in {ids}" + tail, {"ids": list(doc_ids)}, literal)
