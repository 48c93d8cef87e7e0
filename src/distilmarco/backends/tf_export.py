"""A TensorFlow SavedModel of the whole sentence pipeline, strings in, vectors out.

Signatures (``saved_model_cli show --dir DIR --all`` lists them):

- ``serving_default(texts: string[B]) -> sentence_embedding: float32[B, D]``: TensorFlow Text's
  BERT WordPiece tokenizer with the model's own vocabulary and casing, truncation to the model's
  ``max_seq_length``, [CLS] ... [SEP], padding, then the encoder, pooling and heads (so the vectors
  are unit length where the model ends with Normalize);
- ``tokenize(texts) -> input_ids, attention_mask: int64[B, T]``;
- ``embed_ids(input_ids, attention_mask) -> sentence_embedding``: the model on our token ids.

Loading it needs ``import tensorflow_text`` first (its ops are in the graph). Exports are cached
like the ONNX ones: one folder per model files + exporter + TensorFlow version, built beside its
final place, with a manifest of every file's size and SHA-256, then renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilmarco.backends.export import export_dir, sha256_file
from distilmarco.backends.wordpiece import WordPieceSettings
from distilmarco.errors import BackendError, MissingExtraError
from distilmarco.model.st_format import SentenceModelSpec

log = logging.getLogger(__name__)

# Bump when the exported graph or its signatures change: old cache entries are then ignored.
SAVEDMODEL_VERSION = 1
MANIFEST = "distilmarco-export.json"
OUTPUT_NAME = "sentence_embedding"
# What BertNormalizer's clean_text removes: NUL, U+FFFD and control / format characters other than
# tab, newline and carriage return (which it turns into spaces, as the pre-tokenizer splits on them).
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\p{Cf}\p{Co}\x{fffd}]"


def import_tf() -> tuple[Any, Any]:
    """``tensorflow`` and ``tensorflow_text``, or a MissingExtraError naming the extra."""
    try:
        import tensorflow as tf
        import tensorflow_text as tf_text
    except ImportError as exc:
        raise MissingExtraError(
            exc.name or "tensorflow", "tensorflow", "the TensorFlow export"
        ) from exc
    return tf, tf_text


def build_serving_module(spec: SentenceModelSpec) -> Any:
    """The ``tf.Module`` holding our weights, the in-graph tokenizer and the three signatures."""
    tf, tf_text = import_tf()
    from distilmarco.backends.tf_model import TFSentenceModel, torch_state

    settings = WordPieceSettings.from_spec(spec)
    model = TFSentenceModel(spec, torch_state(spec))

    class SentenceServing(tf.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__(name="distilmarco")
            self.model = model
            init = tf.lookup.KeyValueTensorInitializer(
                tf.constant(settings.vocab), tf.range(len(settings.vocab), dtype=tf.int64)
            )
            self.table = tf.lookup.StaticVocabularyTable(init, num_oov_buckets=1)
            # Normalisation is done below, as BertNormalizer does it; TensorFlow Text's own
            # lower_case applies NFKC case folding, which rewrites ligatures, full-width letters
            # and superscripts that the model's tokenizer keeps.
            self.tokenizer = tf_text.BertTokenizer(
                self.table,
                token_out_type=tf.int64,
                unknown_token=settings.unk_token,
                lower_case=False,
                max_chars_per_token=settings.max_chars_per_word,
            )

        def normalise(self, texts: Any) -> Any:
            """BertNormalizer: drop control characters, spaces for Unicode spaces (no-break
            space included); if uncased, NFD, strip accents, lower-case."""
            texts = tf.strings.regex_replace(texts, _CONTROL, "")
            texts = tf.strings.regex_replace(texts, r"\p{Zs}", " ")
            if settings.lower_case:
                texts = tf_text.normalize_utf8(texts, "NFD")
                texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
                texts = tf.strings.lower(texts, encoding="utf-8")
            return texts

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
        def tokenize(self, texts: Any) -> dict[str, Any]:
            pieces = self.tokenizer.tokenize(self.normalise(texts)).merge_dims(-2, -1)  # (B, None)
            pieces = pieces[:, : settings.max_length - 2]
            rows = tf.shape(texts, out_type=tf.int64)[0]

            def column(token_id: int) -> Any:
                return tf.RaggedTensor.from_tensor(
                    tf.fill([rows, 1], tf.constant(token_id, tf.int64))
                )

            ids = tf.concat([column(settings.cls_id), pieces, column(settings.sep_id)], axis=1)
            input_ids = ids.to_tensor(default_value=tf.constant(settings.pad_id, tf.int64))
            width = tf.shape(input_ids, out_type=tf.int64)[1]
            mask = tf.sequence_mask(ids.row_lengths(), maxlen=width, dtype=tf.int64)
            return {"input_ids": input_ids, "attention_mask": mask}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], tf.int64, name="input_ids"),
                tf.TensorSpec([None, None], tf.int64, name="attention_mask"),
            ]
        )
        def embed_ids(self, input_ids: Any, attention_mask: Any) -> dict[str, Any]:
            return {OUTPUT_NAME: self.model(input_ids, attention_mask)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
        def serve(self, texts: Any) -> dict[str, Any]:
            tokens = self.tokenize(texts)
            return {OUTPUT_NAME: self.model(tokens["input_ids"], tokens["attention_mask"])}

    return SentenceServing()


def write_savedmodel(spec: SentenceModelSpec, out: Path) -> None:
    """Write the SavedModel of ``spec`` to the folder ``out`` (which must not exist yet)."""
    tf, _ = import_tf()
    serving = build_serving_module(spec)
    signatures = {
        "serving_default": serving.serve.get_concrete_function(),
        "tokenize": serving.tokenize.get_concrete_function(),
        "embed_ids": serving.embed_ids.get_concrete_function(),
    }
    tf.saved_model.save(serving, os.fspath(out), signatures=signatures)


# --- cached, atomic folders -------------------------------------------------------------------


@dataclass(frozen=True)
class FolderManifest:
    files: tuple[tuple[str, int, str], ...]  # (relative path, bytes, sha256)
    exporter: int

    @classmethod
    def of(cls, folder: Path) -> FolderManifest:
        rows = [
            (p.relative_to(folder).as_posix(), p.stat().st_size, sha256_file(p))
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        ]
        return cls(tuple(rows), SAVEDMODEL_VERSION)

    @classmethod
    def read(cls, folder: Path) -> FolderManifest | None:
        try:
            raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            rows = tuple((str(r[0]), int(r[1]), str(r[2])) for r in raw["files"])
            return cls(rows, int(raw["exporter"]))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None


def folder_is_valid(folder: Path) -> bool:
    """True when ``folder``'s manifest matches every file in it (sizes and SHA-256)."""
    manifest = FolderManifest.read(folder)
    return manifest is not None and manifest == FolderManifest.of(folder)


def publish_folder(tmp: Path, final: Path) -> Path:
    """fsync every file of ``tmp`` and its manifest, then rename ``tmp`` to ``final``."""
    manifest = FolderManifest.of(tmp)
    with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
        json.dump({"files": manifest.files, "exporter": manifest.exporter}, f, indent=1)
    for path in tmp.rglob("*"):
        if path.is_file():
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
    if final.is_dir() and not any(final.iterdir()):
        final.rmdir()
    elif final.exists():  # an invalid leftover: moved aside first, since a rename cannot replace it
        stale = final.with_name(f".{final.name}.stale.{os.getpid()}")
        os.replace(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, final)
    if os.name != "nt":
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return final


def _build_into(spec: SentenceModelSpec, final: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        shutil.rmtree(tmp)  # the writer creates the folder itself
        write_savedmodel(spec, tmp)
        return publish_folder(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_savedmodel(spec: SentenceModelSpec, out: Path) -> Path:
    """Write the SavedModel of ``spec`` to ``out`` atomically (a new or empty folder)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BackendError(f"{out} exists and is not an empty folder; choose a new output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    return _build_into(spec, out)


def savedmodel_path(
    spec: SentenceModelSpec, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """A valid cached SavedModel of ``spec``, exported if needed."""
    tf, _ = import_tf()
    tag = hashlib.sha256(f"{SAVEDMODEL_VERSION}-{tf.__version__}".encode()).hexdigest()[:8]
    final = export_dir(spec, cache_dir) / f"savedmodel-{tag}"
    if folder_is_valid(final):
        return final
    if final.exists():
        log.warning("cached SavedModel %s is incomplete or corrupt; rebuilding", final)
    final.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to a TensorFlow SavedModel (once per model and exporter)", spec.folder)
    try:
        return _build_into(spec, final)
    except OSError:
        if folder_is_valid(final):  # another process published the same export first
            return final
        raise
