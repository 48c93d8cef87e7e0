"""Teacher vectors for distillation: computed once per (teacher, texts) and cached in safetensors.

The cache key hashes the teacher's files (weights, configs, vocabulary), its length limit and
every text in order, so a changed model or data set never reuses stale vectors.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from distilmarco.errors import InputError

log = logging.getLogger(__name__)

CACHE_ENV = "DISTILMARCO_CACHE"
_MODEL_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")
_SKIPPED_FOLDERS = ("onnx", "openvino")  # exports do not change what the torch model computes


def default_cache_dir() -> Path:
    """``$DISTILMARCO_CACHE/teacher-vectors``, else ``~/.cache/distilmarco/teacher-vectors``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "distilmarco"
    return Path(root) / "teacher-vectors"


def model_digest(folder: Path) -> str:
    """SHA-256 over the model's own files (relative name and content), sorted by name."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or path.suffix not in _MODEL_SUFFIXES:
            continue
        if rel.parts[0] in _SKIPPED_FOLDERS or rel.name == "README.md":
            continue
        digest.update(str(rel).encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def texts_digest(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def cache_key(model_folder: Path, max_seq_length: int, texts: Sequence[str]) -> str:
    parts = f"{model_digest(model_folder)}:{max_seq_length}:{texts_digest(texts)}"
    return hashlib.sha256(parts.encode("ascii")).hexdigest()[:32]


def teacher_vectors(
    teacher: str | os.PathLike[str],
    texts: Sequence[str],
    cache_dir: Path | None = None,
    *,
    device: str = "cpu",
) -> np.ndarray:
    """(N, D) float32 teacher embeddings of ``texts``, from the cache when it has them."""
    from distilmarco.encoder import Encoder

    if not texts:
        raise InputError("no texts to compute teacher vectors for")
    encoder = Encoder(teacher, device=device)
    folder = encoder.spec.folder
    path = (cache_dir or default_cache_dir()) / (
        f"{cache_key(folder, encoder.max_seq_length, texts)}.safetensors"
    )
    if path.is_file():
        vectors = load_file(str(path))["vectors"]
        if vectors.shape == (len(texts), encoder.dimension):
            log.info("teacher vectors for %d texts from %s", len(texts), path)
            return vectors
        log.warning("ignoring %s: shape %s does not fit the data", path, vectors.shape)
    log.info("computing teacher vectors for %d texts", len(texts))
    vectors = encoder.encode(list(texts), truncation="count").astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    save_file(
        {"vectors": np.ascontiguousarray(vectors)},
        str(tmp),
        metadata={"teacher": str(teacher), "texts": str(len(texts))},
    )
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache file under the key
    return vectors
