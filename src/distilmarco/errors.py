"""One small error hierarchy. Messages name the bad value and, where there are any, the valid choices.

The CLI and the server map these to exit codes and HTTP statuses at the edge; library code raises them.
"""

from __future__ import annotations


class DistilmarcoError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelNotFoundError(DistilmarcoError):
    """The model could not be found locally or on the Hub."""


class ModelFormatError(DistilmarcoError):
    """A model folder is malformed or uses a module, activation or option we do not support."""


class CheckpointError(ModelFormatError):
    """Weights do not match the architecture: missing, unexpected or mis-shaped keys."""


class InputError(DistilmarcoError, ValueError):
    """User input is invalid (names the index or field at fault)."""


class TruncationError(InputError):
    """Raised in strict mode when an input is longer than the model's limit."""


class MissingExtraError(DistilmarcoError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, module: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the optional package {module!r}, which is not installed. "
            f"Install it with: pip install 'distilmarco[{extra}]'"
        )
        self.module = module
        self.extra = extra


class BackendError(DistilmarcoError):
    """A backend could not be built, exported or run."""


class NonFiniteOutputError(BackendError):
    """The model gave NaN or infinity for some inputs (``positions``: their indices in the call).

    Typically an overflow in reduced precision (fp16, int8) triggered by those texts alone.
    """

    def __init__(self, message: str, positions: tuple[int, ...]) -> None:
        super().__init__(message)
        self.positions = positions


class QueueFullError(DistilmarcoError):
    """The server's inference queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerClosedError(DistilmarcoError):
    """The server's inference worker is shutting down and accepts no new work."""


class ClientGoneError(DistilmarcoError):
    """The client disconnected before its answer was ready; its work was dropped."""


class IndexStoreError(DistilmarcoError):
    """An index file is unusable: not ours, from a newer version, or damaged."""


class IndexBusyError(IndexStoreError):
    """Another connection held the index's write lock for longer than the wait allowed."""


class IndexFullError(IndexStoreError):
    """The disk (or the database's size limit) is full; the write was rolled back."""


class ModelMismatchError(IndexStoreError):
    """An index was built with another model than the one it is opened with."""


class NotFoundError(DistilmarcoError, KeyError):
    """A document id (or similar key) does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FormatError(InputError):
    """A data file is malformed; the message names the file and the line (``path:line: ...``)."""
