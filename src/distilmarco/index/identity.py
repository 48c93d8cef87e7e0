"""Model identity: which model and engine embedded an index, and refusing another.

A model is identified by its content: ``fingerprint`` is a SHA-256 over the files that decide its
vectors (weights, configs, tokenizer, module folders), so any folder holding the same model opens
an index built with it, and a changed file in the same folder does not. The Hub id and revision
are recorded beside it when the model came from the Hub; ``model_id`` (the Hub id or the folder)
says where to load the model from when none is given.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distilmarco.errors import ModelMismatchError

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder

log = logging.getLogger(__name__)

LEGACY_IDENTITY = ("model_id", "revision", "dimension", "similarity")  # before fingerprints
SHAPE = ("dimension", "similarity")
SKIPPED_FOLDERS = ("onnx", "openvino")  # exports of the same weights, not the model itself
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
TOKENIZER_FILES = ("vocab.txt", "merges.txt", "spiece.model", "sentencepiece.bpe.model")
# Keys that record who wrote a config, not what the model computes.
VOLATILE_KEYS = frozenset(
    {"transformers_version", "_name_or_path", "name_or_path", "__version__", "_commit_hash"}
)
GENERIC_FOLDER_NAMES = frozenset({"model", "models", "checkpoint", "output", "final", "snapshot"})


def fingerprint_files(folder: Path) -> list[Path]:
    """The files of a model folder that decide its vectors, in a fixed order."""
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.parts[0] in SKIPPED_FOLDERS:
            continue
        name = path.name
        if name.endswith(".json") or name in TOKENIZER_FILES:
            found.append(path)
        elif path.suffix in WEIGHT_SUFFIXES:
            has_safetensors = any(path.parent.glob("*.safetensors"))
            if path.suffix == ".safetensors" or not has_safetensors:
                found.append(path)
    return found


def folder_fingerprint(folder: Path) -> str:
    """``sha256:<hex>`` of the model in ``folder`` (see the module docstring)."""
    folder = Path(folder).resolve()
    files = fingerprint_files(folder)
    stamp = tuple((str(p.relative_to(folder)), *_stat(p)) for p in files)
    return _fingerprint(str(folder), stamp)


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=32)
def _fingerprint(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    """Cached by the files' sizes and times, in memory and on disk, so a model is hashed once."""
    from distilmarco.backends.export import cache_root

    key = hashlib.sha256(folder.encode("utf-8")).hexdigest()[:24]
    saved = cache_root() / "fingerprints" / f"{key}.json"
    try:
        record = json.loads(saved.read_text(encoding="utf-8"))
        if record.get("folder") == folder and record.get("stamp") == [list(s) for s in stamp]:
            return str(record["fingerprint"])
    except (OSError, ValueError, AttributeError):
        pass  # no usable record: hash the files
    fingerprint = _hash_files(folder, stamp)
    try:
        saved.parent.mkdir(parents=True, exist_ok=True)
        tmp = saved.with_name(f"{saved.name}.{os.getpid()}.tmp")
        record = {"folder": folder, "stamp": stamp, "fingerprint": fingerprint}
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, saved)
    except OSError as exc:
        log.debug("could not cache the fingerprint of %s: %s", folder, exc)
    return fingerprint


def _hash_files(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    total = hashlib.sha256()
    for rel, _, _ in stamp:
        path = Path(folder) / rel
        digest = _json_digest(path) if path.suffix == ".json" else _file_digest(path)
        total.update(f"{Path(rel).as_posix()}\0{digest}\n".encode())
    return "sha256:" + total.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_digest(path: Path) -> str:
    """A config's canonical form (sorted keys, writer-specific keys dropped); bytes if not JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _file_digest(path)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in VOLATILE_KEYS}
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def display_name(model_id: str) -> str:
    """A model's name for people: the Hub id, or a local folder's name (with its parent's name
    when the folder's own is generic, such as ``model``)."""
    path = Path(model_id)
    if not path.is_absolute():
        return model_id
    for part in path.parts:  # a folder inside the Hub cache: models--org--name/snapshots/...
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    if path.name.lower() in GENERIC_FOLDER_NAMES and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name


def model_meta(encoder: Encoder) -> dict[str, str]:
    """What an index records about the model and the engine that embedded it."""
    return {
        "model_id": encoder.model_id,
        "revision": encoder.revision or "",
        "dimension": str(encoder.dimension),
        "similarity": encoder.similarity,
        "model_name": display_name(encoder.model_id),
        "fingerprint": folder_fingerprint(encoder.spec.folder),
        **engine_meta(encoder),
    }


def check_same_model(recorded: Mapping[str, str], wanted: Mapping[str, str]) -> None:
    """Raise ModelMismatchError when an index built with one model is used with another.

    With fingerprints on both sides the content decides (any folder with the same files
    matches); an index from before fingerprints is compared with the fingerprint of its
    recorded folder when that still exists, else by its recorded id and revision.
    """
    if "model_id" not in recorded:
        return
    check_same_engine(recorded, wanted)
    shape = [f"{key} {recorded.get(key)!r} (index) != {wanted.get(key)!r} (given)"
             for key in SHAPE if recorded.get(key, "") != wanted.get(key, "")]  # fmt: skip
    theirs, ours = (
        recorded.get("fingerprint") or _legacy_fingerprint(recorded),
        wanted.get("fingerprint"),
    )
    if theirs and ours:
        if theirs != ours:
            shape.insert(0, f"fingerprint {theirs[:19]}… (index) != {ours[:19]}… (given)")
    else:
        shape = [f"{key} {recorded.get(key)!r} (index) != {wanted.get(key)!r} (given)"
                 for key in LEGACY_IDENTITY if recorded.get(key, "") != wanted.get(key, "")]  # fmt: skip
    if shape:
        name = recorded.get("model_name") or display_name(recorded["model_id"])
        raise ModelMismatchError(
            f"this index was built with another model ({name}): "
            + "; ".join(shape)
            + ". Open it without a model to use the recorded one, or run reindex to re-embed"
        )


@dataclass(frozen=True)
class Engine:
    """How texts are embedded: ``None`` means the default for a new index (``auto`` backend, the
    fastest here, at exact ``fp32``) and, for an existing one, what it records."""

    backend: str | None = None
    precision: str | None = None
    device: str = "cpu"
    batch_tokens: int | None = None
    threads: int | None = None

    def encoder(
        self,
        model: str | os.PathLike[str],
        revision: str | None = None,
        *,
        recorded: Mapping[str, str] | None = None,
    ) -> Encoder:
        """An ``Encoder`` for ``model``; ``recorded`` (an index's meta) fills what is unset."""
        from distilmarco.encoder import Encoder

        backend, precision = self.resolve(recorded or {})
        return Encoder(
            model,
            revision=revision,
            backend=backend,
            precision=precision,
            device=self.device,
            batch_tokens=self.batch_tokens,
            threads=self.threads,
        )

    def resolve(self, recorded: Mapping[str, str]) -> tuple[str, str]:
        """(backend, precision): as given, else as recorded, else ``auto`` / ``fp32``. fp32
        vectors are the same from every backend, so only other precisions pin the backend."""
        precision = self.precision or recorded.get("precision") or EXACT
        if self.backend is not None:
            return self.backend, precision
        if precision != EXACT and recorded.get("precision") == precision:
            return recorded.get("backend") or "auto", precision
        return "auto", precision


EXACT = "fp32"


def engine_meta(encoder: Encoder) -> dict[str, str]:
    return {"backend": encoder.backend.name, "precision": encoder.backend.precision}


def check_same_engine(recorded: Mapping[str, str], wanted: Mapping[str, str]) -> None:
    """Documents and queries of one index are embedded the same way: exact fp32 from any backend
    (an index without a record was built in fp32), any other precision by the recorded backend."""
    if "model_id" not in recorded or "precision" not in wanted:
        return
    theirs = (recorded.get("backend", "torch"), recorded.get("precision", EXACT))
    ours = (wanted["backend"], wanted["precision"])
    if theirs[1] == ours[1] == EXACT or theirs == ours:
        return
    raise ModelMismatchError(
        f"this index was embedded with {theirs[0]} {theirs[1]}, not {ours[0]} {ours[1]}: queries "
        f"must be embedded the same way. Leave --backend/--precision unset to use the recorded "
        f"engine, or run reindex to re-embed"
    )


def load_recorded_encoder(recorded: Mapping[str, str], engine: Engine | None = None) -> Encoder:
    """The model an index records (the default model for a new index) on its recorded engine,
    with an error that says what to do when its folder has moved."""
    from distilmarco.errors import ModelNotFoundError
    from distilmarco.model.hub import DEFAULT_MODEL

    model_id = recorded.get("model_id", DEFAULT_MODEL)
    try:
        return (engine or Engine()).encoder(
            model_id, recorded.get("revision") or None, recorded=recorded
        )
    except ModelNotFoundError as exc:
        fingerprint = recorded.get("fingerprint")
        same = f" (fingerprint {fingerprint[:19]}…)" if fingerprint else ""
        raise ModelNotFoundError(
            f"this index's model {display_name(model_id)} cannot be loaded from {model_id} "
            f"({exc}); pass --model FOLDER (Python: Index(path, encoder)) with any copy of the "
            f"same model{same}"
        ) from exc


def _legacy_fingerprint(recorded: Mapping[str, str]) -> str | None:
    """The fingerprint of an older index's model, from its recorded folder if it is still there."""
    folder = Path(recorded.get("model_id", ""))
    if folder.is_absolute() and folder.is_dir():
        return folder_fingerprint(folder)
    return None
