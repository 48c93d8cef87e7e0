"""LiteRT (TFLite) export of our PyTorch sentence module through ``litert-torch``.

The converter traces static shapes only (a dynamic batch axis fails in its lowering), so the file
holds two signatures per sequence length, ``len32`` / ``len64`` / ``len128`` / ``len256`` / ``len512``
up to the model's ``max_seq_length`` (which is added if it is not one of them): one for a fixed
batch of ``SIGNATURE_TOKENS // length`` rows and one for a single row (``len32x1``); all share one
copy of the weights. The backend pads a batch up to the shortest length that fits it. int8 is dynamic-range quantisation by
``ai-edge-quantizer`` (int8 weights per channel, activations quantised at run time).

Conversion runs in a subprocess, as the ONNX export does: the converter imports JAX and patches
torch's export machinery, and its progress lines go to that process's stderr, not ours.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from distilmarco.backends.export import export_dir, is_valid, publish, temp_beside
from distilmarco.errors import BackendError, InputError
from distilmarco.model.st_format import SentenceModelSpec

log = logging.getLogger(__name__)

# Bump when the exported signatures change: old cache entries are then ignored.
LITERT_VERSION = 2
LENGTHS = (32, 64, 128, 256, 512)
SIGNATURE_TOKENS = 2048
PRECISIONS = ("fp32", "int8")
INSTALL_HINT = (
    "pip install 'distilmarco[litert]' && "
    "pip install --no-deps 'litert-torch==0.10.*' 'litert-converter==0.5.*'"
)


@dataclass(frozen=True)
class Signature:
    name: str
    batch: int
    length: int


def signatures(max_seq_length: int) -> tuple[Signature, ...]:
    """The fixed (batch, length) shapes exported for a model with this length limit: per length
    a batched one and a one-row one (for single queries and a batch's last few rows)."""
    lengths = sorted({n for n in LENGTHS if n < max_seq_length} | {max_seq_length})
    out = []
    for n in lengths:
        batch = max(1, SIGNATURE_TOKENS // n)
        out.append(Signature(f"len{n}", batch, n))
        if batch > 1:
            out.append(Signature(f"len{n}x1", 1, n))
    return tuple(out)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def litert_model(
    spec: SentenceModelSpec,
    precision: str = "fp32",
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The path of a valid cached LiteRT export of ``spec`` at ``precision``, built if needed."""
    if precision not in PRECISIONS:
        raise InputError(
            f"precision {precision!r} is not available on the litert backend; choose one of "
            f"{PRECISIONS}"
        )
    folder = export_dir(spec, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    key = f"{LITERT_VERSION}-{_version('litert-torch')}-{_version('ai-edge-quantizer')}"
    tag = hashlib.sha256(key.encode()).hexdigest()[:8]
    fp32 = folder / f"model-{tag}.tflite"
    if not is_valid(fp32):
        _build(spec.folder, fp32, "fp32")
    if precision == "fp32":
        return fp32
    int8 = folder / f"model-{tag}.int8.tflite"
    if not is_valid(int8):
        _build(fp32, int8, "int8")
    return int8


def _build(source: Path, final: Path, precision: str) -> None:
    if final.exists():
        log.warning("cached export %s is missing its manifest or corrupt; rebuilding", final)
    log.info("exporting %s to LiteRT %s (once per model and exporter)", source, precision)
    tmp = temp_beside(final)
    try:
        _run_child(source, tmp, precision)
        publish(tmp, final, precision)
    finally:
        tmp.unlink(missing_ok=True)


def _run_child(source: Path, out: Path, precision: str) -> None:
    cmd = [sys.executable, "-m", "distilmarco.backends.litert_export", str(source), str(out)]
    cmd += ["--precision", precision]
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BackendError(f"LiteRT export of {source} failed (exit {proc.returncode}):\n{tail}")


def export_litert(folder: Path, out: Path) -> None:
    """Convert the model in ``folder`` to a multi-signature fp32 ``.tflite`` at ``out``."""
    try:
        import litert_torch
    except ImportError as exc:
        raise BackendError(f"the LiteRT export needs litert-torch: {INSTALL_HINT}") from exc
    import torch

    from distilmarco.model.sentence import load_sentence_module
    from distilmarco.model.transformer import explicit_attention

    spec = SentenceModelSpec.from_folder(folder)
    module = load_sentence_module(spec).eval()
    converter = None
    for sig in signatures(spec.max_seq_length):
        sample = {
            "input_ids": torch.zeros((sig.batch, sig.length), dtype=torch.long),
            "attention_mask": torch.ones((sig.batch, sig.length), dtype=torch.long),
        }
        if converter is None:
            converter = litert_torch.signature(sig.name, module, sample_kwargs=sample)
        else:
            converter = converter.signature(sig.name, module, sample_kwargs=sample)
    assert converter is not None  # signatures() always yields at least one shape
    # Written out as matmul + mask + softmax: the form the converter lowers to plain TFLite ops.
    with torch.inference_mode(), explicit_attention():
        edge = converter.convert()
    edge.export(os.fspath(out))


def quantize_litert(src: Path, out: Path) -> None:
    """Dynamic-range int8: int8 weights per output channel, float activations quantised per call."""
    try:
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as exc:
        raise BackendError(f"int8 LiteRT needs ai-edge-quantizer: {INSTALL_HINT}") from exc
    q = quantizer.Quantizer(os.fspath(src))
    q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    q.quantize().export_model(os.fspath(out), overwrite=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distilmarco.backends.litert_export")
    parser.add_argument("source", type=Path, help="model folder (fp32) or fp32 .tflite (int8)")
    parser.add_argument("out", type=Path, help="where to write the .tflite file")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.precision == "fp32":
        export_litert(args.source, args.out)
    else:
        quantize_litert(args.source, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
