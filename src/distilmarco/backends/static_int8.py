"""OpenVINO static int8: NNCF post-training quantisation of our packed ONNX export.

OpenVINO's fast int8 kernels run graphs whose activations carry fixed scales (FakeQuantize
nodes); a dynamically quantised ONNX graph gains nothing there. NNCF measures those scales on
calibration text, run through the graph in length-sorted token-budget batches like the encoder's.
It applies SmoothQuant (``ModelType.TRANSFORMER``) and fast bias correction, every matmul int8.
SmoothQuant moves the activations' outlier channels (the GELU outputs feeding the FFN output
projections have channels 10-20 times the rest) into the weights; its strength ``SMOOTH_QUANT``
decides the quality (the figures behind its value: ``benchmarks/results/engine-notes.md``).

Calibration: the user's ``calibration`` texts when given (the index's documents are the natural
choice), else ``DEFAULT_CALIBRATION`` texts of mixed length cut from the English prose of
Python's own bundled documentation (``pydoc_data``), so nothing is downloaded.

The result is cached beside the ONNX exports, one folder per calibration fingerprint:

    <cache>/exports/<model>-<key>/openvino-int8-<fingerprint>/{model.xml,model.bin,manifest.json}

The folder is built under a temporary name and renamed into place once its manifest (sizes and
SHA-256 of both files, versions, the calibration fingerprint) is written; a folder whose files do
not match their manifest is rebuilt, never loaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from distilmarco.backends.export import export_dir, onnx_model, sha256_file
from distilmarco.errors import BackendError, InputError, MissingExtraError
from distilmarco.model.st_format import SentenceModelSpec
from distilmarco.tokenizer import Tokenizer

log = logging.getLogger(__name__)

# Bump when the quantisation recipe changes: older folders are then ignored.
RECIPE_VERSION = 2
DEFAULT_CALIBRATION = 300
MIN_CALIBRATION = 8
# Real tokens per calibration batch: the OpenVINO backend's own default budget.
CALIBRATION_BATCH_TOKENS = 2048
SMOOTH_QUANT = 0.7
_FILES = ("model.xml", "model.bin")


@dataclass(frozen=True)
class Int8Manifest:
    recipe: int
    calibration: str  # fingerprint of the calibration texts
    calibration_texts: int
    files: dict[str, str]  # file name -> SHA-256
    sizes: dict[str, int]
    openvino: str
    nncf: str

    @classmethod
    def read(cls, path: Path) -> Int8Manifest | None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(**raw)
        except (OSError, ValueError, TypeError):
            return None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def default_calibration_texts(count: int = DEFAULT_CALIBRATION, seed: int = 0) -> list[str]:
    """``count`` texts of mixed length (40% one sentence, 50% four, 10% fourteen) from Python's
    bundled documentation prose; the same texts on every machine with the same Python."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some distributions split the docs off; ask for texts instead
        raise BackendError(
            "Python's bundled documentation (pydoc_data), the default int8 calibration text, "
            "is not installed; pass calibration= texts (a few hundred from your own corpus)"
        ) from exc
    prose = " ".join(topics[k] for k in sorted(topics))
    sentences = [
        s
        for s in (part.strip() for part in re.split(r"(?<=[.!?])\s+", prose))
        if 20 < len(s) < 400 and not re.search(r"[{}<>=\[\]|*_]{2}", s)
    ]
    rng = np.random.default_rng(seed)
    sizes = rng.choice(np.array([1, 4, 14]), size=count, p=[0.4, 0.5, 0.1])
    texts = []
    for n in sizes:
        start = int(rng.integers(0, len(sentences) - int(n)))
        texts.append(" ".join(" ".join(sentences[start : start + int(n)]).split()))
    return texts


def check_calibration(texts: Sequence[str]) -> list[str]:
    """The user's calibration texts as a list, or an error naming what is wrong with them."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InputError(f"calibration must be a sequence of strings, got {type(texts).__name__}")
    items = list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"calibration text {i} is {text!r}: expected a non-empty string")
    if len(items) < MIN_CALIBRATION:
        raise InputError(
            f"calibration has {len(items)} text(s); static int8 needs at least "
            f"{MIN_CALIBRATION} (a few hundred of mixed length work best)"
        )
    return items


def calibration_fingerprint(texts: Sequence[str]) -> str:
    """SHA-256 over the texts, each length-prefixed (so splits between texts count)."""
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def calibration_batches(
    tokenizer: Tokenizer, texts: Sequence[str], budget: int = CALIBRATION_BATCH_TOKENS
) -> Iterator[dict[str, np.ndarray]]:
    """Longest first, each batch's rows x longest <= ``budget``: the encoder's batch shapes."""
    ids = tokenizer.encode(list(texts)).ids
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    start = 0
    while start < len(order):
        width = len(ids[order[start]])
        rows = order[start : start + max(1, budget // width)]
        batch = np.full((len(rows), width), tokenizer.pad_id, np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for r, i in enumerate(rows):
            batch[r, : len(ids[i])], mask[r, : len(ids[i])] = ids[i], 1
        yield {"input_ids": batch, "attention_mask": mask}
        start += len(rows)


def _valid(folder: Path, fingerprint: str) -> bool:
    manifest = Int8Manifest.read(folder / "manifest.json")
    if manifest is None or manifest.recipe != RECIPE_VERSION or manifest.calibration != fingerprint:
        return False
    for name in _FILES:
        path = folder / name
        if not path.is_file() or path.stat().st_size != manifest.sizes.get(name):
            return False
        if sha256_file(path) != manifest.files.get(name):
            return False
    return True


def static_int8_model(
    spec: SentenceModelSpec,
    calibration: Sequence[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The ``model.xml`` of a valid cached static int8 model of ``spec``, built if needed."""
    texts = default_calibration_texts() if calibration is None else check_calibration(calibration)
    fingerprint = calibration_fingerprint(texts)
    final = export_dir(spec, cache_dir) / f"openvino-int8-{fingerprint[:16]}"
    if _valid(final, fingerprint):
        return final / "model.xml"
    if final.exists():
        log.warning("cached int8 model %s is outdated, incomplete or corrupt; rebuilding", final)
    fp32 = onnx_model(spec, "fp32", cache_dir)  # the packed, portable graph
    log.info("quantising %s to static int8 on %d calibration texts (once)", spec.folder, len(texts))
    tokenizer = Tokenizer.from_folder(
        spec.transformer_folder, spec.max_seq_length, spec.do_lower_case
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        quantize(fp32, tmp / "model.xml", tokenizer, texts)
        manifest = Int8Manifest(
            recipe=RECIPE_VERSION,
            calibration=fingerprint,
            calibration_texts=len(texts),
            files={name: sha256_file(tmp / name) for name in _FILES},
            sizes={name: (tmp / name).stat().st_size for name in _FILES},
            openvino=_version("openvino"),
            nncf=_version("nncf"),
        )
        for name in _FILES:
            _fsync(tmp / name)
        (tmp / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2))
        _fsync(tmp / "manifest.json")
        _replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "model.xml"


def quantize(src: Path, dst: Path, tokenizer: Tokenizer, texts: Sequence[str]) -> None:
    """NNCF post-training quantisation of the ONNX graph ``src`` into OpenVINO IR ``dst``."""
    try:
        import nncf
        import openvino as ov
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )
    except ImportError as exc:
        raise MissingExtraError("nncf", "openvino", "OpenVINO static int8") from exc
    batches = list(calibration_batches(tokenizer, texts))
    try:
        model = ov.Core().read_model(os.fspath(src))
        names = {p.get_any_name() for p in model.inputs}
        data = nncf.Dataset([{k: v for k, v in b.items() if k in names} for b in batches])
        quantized = nncf.quantize(
            model,
            data,
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(batches),
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT)
            ),
        )
        ov.save_model(quantized, os.fspath(dst))
    except (RuntimeError, ValueError) as exc:  # NNCF and OpenVINO raise these untyped
        raise BackendError(f"static int8 quantisation of {src} failed: {exc}") from exc


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final``; a stale ``final`` is moved aside first."""
    if final.exists():
        stale = final.with_name(f".{final.name}.stale.{os.getpid()}")
        os.replace(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(tmp, final)
    except OSError:
        if not _valid_any(final):  # another process may have won the race with a good copy
            raise
    fd = os.open(final.parent, os.O_RDONLY) if os.name != "nt" else None
    if fd is not None:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _valid_any(folder: Path) -> bool:
    manifest = Int8Manifest.read(folder / "manifest.json")
    return manifest is not None and _valid(folder, manifest.calibration)
