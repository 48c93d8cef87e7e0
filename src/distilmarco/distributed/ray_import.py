"""Import Ray lazily, with an error naming the extra to install when it is missing."""

from __future__ import annotations

from types import ModuleType

from distilmarco.errors import MissingExtraError


def require_ray(feature: str) -> ModuleType:
    """The ``ray`` module with ``ray.data`` loaded, or MissingExtraError naming ``distributed``."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingExtraError("ray[data]", "distributed", feature) from exc
    return ray
