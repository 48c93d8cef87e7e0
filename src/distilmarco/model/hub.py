"""Finding a model: a local folder, or a Hub repository through ``huggingface_hub``'s cache."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from distilmarco.errors import ModelNotFoundError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/msmarco-distilbert-base-v4"
# Only what loading needs: never the TF/Flax/ONNX duplicates, never pickles unless we must.
ALLOW_PATTERNS = [
    "modules.json",
    "config.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "*_Pooling/config.json",
    "*_Dense/config.json",
    "*_Dense/model.safetensors",
    "*_Normalize/*.json",
]
PICKLE_PATTERNS = ["pytorch_model.bin", "*_Dense/pytorch_model.bin"]


@dataclass(frozen=True)
class ResolvedModel:
    folder: Path
    model_id: str  # the Hub repo id, or the folder's absolute path
    revision: str | None  # the commit hash for Hub models, None for local folders


def repo_id_for(name: str) -> str:
    """``msmarco-distilbert-base-v4`` -> ``sentence-transformers/msmarco-distilbert-base-v4``."""
    return name if "/" in name else f"sentence-transformers/{name}"


def resolve(
    model: str | os.PathLike[str], revision: str | None = None, cache_dir: str | Path | None = None
) -> ResolvedModel:
    """A local folder as is; otherwise the Hub snapshot (downloaded once, then cached)."""
    path = Path(model)
    if path.is_dir():
        # The absolute path, so that ./m and /abs/m name the same model (an index records it).
        folder = path.resolve()
        return ResolvedModel(folder=folder, model_id=str(folder), revision=None)
    name = str(model)
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(f"model folder {name!r} does not exist")
    repo_id = repo_id_for(name)
    folder = _snapshot(repo_id, revision, cache_dir, ALLOW_PATTERNS)
    if not any(
        (folder / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")
    ):
        log.warning("%s publishes no safetensors weights; fetching pytorch_model.bin", repo_id)
        folder = _snapshot(repo_id, revision, cache_dir, ALLOW_PATTERNS + PICKLE_PATTERNS)
    return ResolvedModel(folder=folder, model_id=repo_id, revision=folder.name)


def _snapshot(
    repo_id: str, revision: str | None, cache_dir: str | Path | None, patterns: list[str]
) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    where = Path(cache_dir) if cache_dir else Path(HF_HUB_CACHE)
    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns
            )
        )
    except LocalEntryNotFoundError as exc:
        raise ModelNotFoundError(
            f"model {repo_id!r} (revision {revision or 'main'}) is not in the Hub cache at {where} "
            f"and the Hub cannot be reached ({_short(exc)}). Download it once with network access, "
            "or pass a local folder in sentence-transformers format, "
            "e.g. Encoder('/path/to/msmarco-distilbert-base-v4')"
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"could not fetch model {repo_id!r} (revision {revision or 'main'}) into {where}: "
            f"{_short(exc)}. Pass a local folder instead if you have the files."
        ) from exc


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
