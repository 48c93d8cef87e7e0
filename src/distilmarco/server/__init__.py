"""The HTTP server: OpenAI- and TEI-compatible embeddings, similarity, search and a search page."""

from distilmarco.server.app import create_app
from distilmarco.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
