"""Optional dependencies of the apps: fail with the extra to install, not a bare ImportError."""

from __future__ import annotations

import importlib

from distilmarco.errors import MissingExtraError

_PACKAGES = {"sklearn": "scikit-learn", "matplotlib": "matplotlib", "umap": "umap-learn"}


def need(module: str, extra: str, feature: str) -> None:
    """Import ``module`` or raise ``MissingExtraError`` naming ``extra``."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(_PACKAGES.get(module, module), extra, feature) from exc
