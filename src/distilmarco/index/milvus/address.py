"""``milvus://HOST:PORT/COLLECTION``: where a Milvus-backed index lives, parsed and checked."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from distilmarco.errors import InputError

SCHEME = "milvus://"
TOKEN_ENV = "DISTILMARCO_MILVUS_TOKEN"  # "user:password" or an API key, for a secured cluster
# A pathlib.Path folds "//" to "/": accept that form too, so a Path-typed option still works.
_URI = re.compile(
    r"milvus(?P<tls>\+https)?:/{1,2}(?P<host>[^/:\[\]]+|\[[^\]]+\]):(?P<port>\d+)/(?P<name>[^/]+)"
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def is_milvus(location: str | os.PathLike[str]) -> bool:
    """Whether an index location names a Milvus collection rather than a file."""
    return re.match(r"milvus(\+https)?:/", os.fspath(location)) is not None


@dataclass(frozen=True)
class MilvusAddress:
    """A Milvus server and one collection on it."""

    host: str
    port: int
    collection: str
    tls: bool = False

    @classmethod
    def parse(cls, location: str | os.PathLike[str]) -> MilvusAddress:
        text = os.fspath(location)
        found = _URI.fullmatch(text)
        if found is None:
            raise InputError(
                f"{text!r} is not a Milvus address; write milvus://HOST:PORT/COLLECTION "
                "(milvus+https:// for TLS)"
            )
        name, port = found["name"], int(found["port"])
        if not _NAME.fullmatch(name):
            raise InputError(
                f"collection name {name!r} must start with a letter or '_' and hold only letters, "
                "digits and '_' (at most 255)"
            )
        if not 0 < port < 65536:
            raise InputError(f"port {port} in {text!r} is not a TCP port (1-65535)")
        return cls(found["host"], port, name, tls=bool(found["tls"]))

    @property
    def uri(self) -> str:
        """The server's address as ``MilvusClient(uri=...)`` takes it."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"milvus{'+https' if self.tls else ''}://{self.host}:{self.port}/{self.collection}"


def token_from_env() -> str:
    """Credentials for the server from ``DISTILMARCO_MILVUS_TOKEN`` (empty: none)."""
    return os.environ.get(TOKEN_ENV, "")
