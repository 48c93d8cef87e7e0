"""ONNX exports of our own ``SentenceModule``, cached on disk and validated before use.

One export per model folder state, exporter version, graph flavour and precision:

    <cache>/exports/<folder name>-<key>/model.onnx            "portable": fp32, packed ("varlen")
    <cache>/exports/<folder name>-<key>/model.int8.onnx       dynamic int8 of the above
    <cache>/exports/<folder name>-<key>/model.fused.onnx      "fused": fp32 for ONNX Runtime
    <cache>/exports/<folder name>-<key>/model.fused.int8.onnx dynamic int8 of the above
    ... and for each a ``.json`` manifest with its size and SHA-256.

The portable graph uses standard ONNX operators only (OpenVINO reads it). The fused graph is for
ONNX Runtime alone: exported unpacked with attention written out (``explicit_attention``), then
rewritten by ONNX Runtime's transformer optimizer into its ``Attention``, ``SkipLayerNormalization``
and ``BiasGelu`` kernels; its int8 form quantises attention too (``QAttention``), with int8
weights, and splits the outlier channels of the FFN output projections off into small fp32
matmuls (``outliers.py``). The fused graphs are the faster ones (figures in
``benchmarks/results/engine-notes.md``).

Files are written to a temp name, fsynced and renamed; the manifest is written last. On load the
file's size and hash must match its manifest, otherwise it is rebuilt, never loaded. The export
runs in a subprocess: ``torch.onnx.export`` may leave state behind that changes later eager
forwards in the exporting process (seen with transformers 5.x), and the caller never needs torch.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from distilmarco.backends.outliers import ffn_output_layer, split_outliers
from distilmarco.errors import BackendError, MissingExtraError
from distilmarco.model.st_format import SentenceModelSpec
from distilmarco.tokenizer import Tokenizer

log = logging.getLogger(__name__)

# Bump when the exported graph changes (inputs, packing, opset): old cache entries are ignored.
EXPORTER_VERSION = 3
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
_SKIP_DIRS = {"onnx", "openvino", ".git"}
# int8, portable graph: the FFN output projections of the first layers stay fp32 (the fused graph
# splits their outlier channels off instead; see ``quantize_int8``).
FP32_FFN_OUT_LAYERS = 2

_CHILD_WARNING = "distilmarco-export warning: "

ExportKind = Literal["fp32", "int8"]
Flavour = Literal["portable", "fused"]
FLAVOURS: tuple[str, ...] = ("portable", "fused")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$DISTILMARCO_CACHE``, else ``~/.cache/distilmarco``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("DISTILMARCO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "distilmarco"


def folder_fingerprint(folder: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime ns) of every file that defines the model, sorted."""
    rows = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if (rel.parts and rel.parts[0] in _SKIP_DIRS) or not path.is_file():
            continue
        st = path.stat()  # follows the Hub cache's symlinks to the blobs
        rows.append((rel.as_posix(), st.st_size, st.st_mtime_ns))
    return rows


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def export_dir(spec: SentenceModelSpec, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder for this model folder's current files and this exporter."""
    key_parts = {
        "folder": str(spec.folder.resolve()),
        "files": folder_fingerprint(spec.folder),
        "exporter": EXPORTER_VERSION,
        "opset": OPSET,
        "torch": _version("torch"),
    }
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.folder.name)[:60] or "model"
    return cache_root(cache_dir) / "exports" / f"{name}-{key}"


# --- validated, atomic files ------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    file: str
    bytes: int
    sha256: str
    kind: str
    exporter: int

    @classmethod
    def read(cls, path: Path) -> Manifest | None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: raw[k] for k in ("file", "bytes", "sha256", "kind", "exporter")})
        except (OSError, ValueError, KeyError, TypeError):
            return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def is_valid(path: Path) -> bool:
    """True when ``path`` and its manifest exist and the file's size and SHA-256 match it."""
    manifest = Manifest.read(manifest_path(path))
    if manifest is None or not path.is_file() or manifest.exporter != EXPORTER_VERSION:
        return False
    if path.stat().st_size != manifest.bytes:
        return False
    return sha256_file(path) == manifest.sha256


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path, kind: str) -> Path:
    """fsync ``tmp``, rename it to ``final``, then write its manifest the same way."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    manifest = Manifest(final.name, tmp.stat().st_size, sha256_file(tmp), kind, EXPORTER_VERSION)
    os.replace(tmp, final)
    mtmp = final.with_name(f".{final.name}.json.{os.getpid()}.tmp")
    with open(mtmp, "w", encoding="utf-8") as f:
        json.dump(manifest.__dict__, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(mtmp, manifest_path(final))
    _fsync_dir(final.parent)
    return final


def temp_beside(final: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    return Path(name)


# --- building ---------------------------------------------------------------------------------


def onnx_model(
    spec: SentenceModelSpec,
    kind: ExportKind = "fp32",
    cache_dir: str | os.PathLike[str] | None = None,
    flavour: Flavour = "portable",
) -> Path:
    """The path of a valid cached export of ``spec`` (``fp32`` or ``int8``, ``portable`` or
    ``fused``), built if needed."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour {flavour!r} is not one of {FLAVOURS}")
    folder = export_dir(spec, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = "model" if flavour == "portable" else "model.fused"
    fp32 = folder / f"{stem}.onnx"
    if not is_valid(fp32):
        if fp32.exists():
            log.warning("cached export %s is missing its manifest or corrupt; rebuilding", fp32)
        log.info("exporting %s to ONNX, %s (once per model and exporter)", spec.folder, flavour)
        tmp = temp_beside(fp32)
        try:
            _export_in_subprocess(spec.folder, tmp, flavour)
            publish(tmp, fp32, "fp32")
        finally:
            tmp.unlink(missing_ok=True)
    if kind == "fp32":
        return fp32
    int8 = folder / f"{stem}.int8.onnx"
    if not is_valid(int8):
        if int8.exists():
            log.warning("cached export %s is missing its manifest or corrupt; rebuilding", int8)
        tmp = temp_beside(int8)
        try:
            tokenizer = None
            if flavour == "fused":
                tokenizer = Tokenizer.from_folder(
                    spec.transformer_folder, spec.max_seq_length, spec.do_lower_case
                )
            quantize_int8(fp32, tmp, tokenizer)
            publish(tmp, int8, "int8")
        finally:
            tmp.unlink(missing_ok=True)
    return int8


def quantize_int8(src: Path, dst: Path, tokenizer: Tokenizer | None = None) -> None:
    """Dynamic int8: int8 weights (per output channel), activations quantised per batch at run
    time, on every linear layer.

    The inputs of the FFN output projections (GELU outputs) carry the outlier channels that
    per-tensor activation quantisation handles worst. With a ``tokenizer`` (the fused graph, for
    ONNX Runtime) those channels are split off into small fp32 matmuls (``outliers.py``), and
    attention is quantised too, with signed int8 weights, which x86 CPUs without VNNI multiply in
    one instruction (u8 x s8). Without one (the portable graph, which OpenVINO reads too, with
    unsigned weights) the first ``FP32_FFN_OUT_LAYERS`` of those projections stay fp32. Both
    keep int8 within the cosine contract to fp32 (mean >= 0.995, min >= 0.98; figures in
    ``benchmarks/results/engine-notes.md``).
    """
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingExtraError("onnxruntime", "onnx", "int8 quantisation") from exc
    model = onnx.load(os.fspath(src))
    fused = tokenizer is not None
    if tokenizer is not None:
        keep = split_outliers(model, tokenizer)
    else:
        keep = [
            n.name
            for n in model.graph.node
            if (at := ffn_output_layer(n)) is not None and at < FP32_FFN_OUT_LAYERS
        ]
    with _quantizer_logs_to_debug():
        quantize_dynamic(
            model,
            dst,
            op_types_to_quantize=["MatMul", "Gemm", "Attention"] if fused else ["MatMul", "Gemm"],
            per_channel=True,
            weight_type=QuantType.QInt8 if fused else QuantType.QUInt8,
            # The quantiser rewrites Gemm to "<name>_MatMul" before matching: list both names.
            nodes_to_exclude=keep + [f"{k}_MatMul" for k in keep],
            # Contrib operators (fused graphs) carry no shape-inferred types: their outputs are float.
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )


@contextlib.contextmanager
def _quantizer_logs_to_debug() -> Iterator[None]:
    """While ONNX Runtime's quantiser runs, its messages (about 50 INFO lines and a WARNING per
    export, sent through the root logger) become DEBUG records of ours. Its module-level
    ``logging.warning`` would also install a stderr handler on an unconfigured root logger (an
    implicit ``basicConfig``); a NullHandler stands in for the call's duration to prevent that."""
    root = logging.getLogger()

    package = os.path.join("onnxruntime", "quantization", "")

    def reroute(record: logging.LogRecord) -> bool:
        if record.name != "root" or package not in record.pathname:
            return True
        log.debug("onnxruntime.quantization: %s", record.getMessage())
        return False

    stand_in = logging.NullHandler() if not root.handlers else None
    if stand_in is not None:
        root.addHandler(stand_in)
    root.addFilter(reroute)
    try:
        yield
    finally:
        root.removeFilter(reroute)
        if stand_in is not None:
            root.removeHandler(stand_in)


def _export_in_subprocess(folder: Path, out: Path, flavour: Flavour = "portable") -> None:
    cmd = [
        sys.executable,
        "-m",
        "distilmarco.backends.export",
        str(folder),
        str(out),
        "--flavour",
        flavour,
    ]
    # The child must import this very package, installed or not.
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BackendError(f"ONNX export of {folder} failed (exit {proc.returncode}):\n{tail}")
    for line in proc.stderr.splitlines():  # the child's own warnings (see ``main``), passed on
        if line.startswith(_CHILD_WARNING):
            log.warning("%s", line.removeprefix(_CHILD_WARNING))


def export_onnx(folder: Path, out: Path, flavour: Flavour = "portable") -> None:
    """Export the model in ``folder`` to ``out`` with dynamic batch and length axes: the packed
    graph (``portable``), or the unpacked one optimised for ONNX Runtime (``fused``)."""
    try:
        import onnx  # noqa: F401  (the TorchScript exporter needs it)
    except ImportError as exc:
        raise MissingExtraError("onnx", "onnx", "ONNX export") from exc
    import torch
    from torch import nn

    from distilmarco.backends.torch_backend import PackedSentence
    from distilmarco.model.sentence import load_sentence_module
    from distilmarco.model.transformer import explicit_attention

    spec = SentenceModelSpec.from_folder(folder)
    sentence = load_sentence_module(spec).eval()
    module: nn.Module = PackedSentence(sentence) if flavour == "portable" else sentence
    ids = torch.tensor([[101, 2023, 2003, 1037, 102], [101, 7592, 102, 0, 0]])
    mask = (ids != 0).long()
    axes = {"batch": 0, "sequence": 1}
    dynamic = {n: {i: a for a, i in axes.items()} for n in INPUT_NAMES}
    dynamic[OUTPUT_NAME] = {0: "batch"}
    raw = out if flavour == "portable" else out.with_name(out.name + ".raw")
    try:
        attention = explicit_attention() if flavour == "fused" else contextlib.nullcontext()
        with torch.inference_mode(), attention:
            torch.onnx.export(
                module,
                (ids, mask),
                str(raw),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
                do_constant_folding=True,
            )
        if flavour == "fused":
            fuse_for_onnxruntime(raw, out, spec.transformer.num_heads, spec.transformer.hidden_size)
    finally:
        if raw != out:
            raw.unlink(missing_ok=True)


def fuse_for_onnxruntime(src: Path, dst: Path, num_heads: int, hidden_size: int) -> None:
    """Rewrite a BERT-family graph with ONNX Runtime's fused CPU operators (attention, skip +
    LayerNorm, bias + GELU). Python-level fusions only: the result still loads on any CPU."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError as exc:
        raise MissingExtraError("onnxruntime", "onnx", "the fused ONNX Runtime graph") from exc
    model = optimize_model(
        os.fspath(src),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        opt_level=0,
    )
    fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    log.info("fused operators: %s", fused)
    if not fused.get("Attention"):
        log.warning("ONNX Runtime's optimizer fused no attention in %s: slower, still correct", src)
    model.save_model_to_file(os.fspath(dst))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distilmarco.backends.export")
    parser.add_argument("folder", type=Path, help="sentence-transformers model folder")
    parser.add_argument("out", type=Path, help="where to write the .onnx file")
    parser.add_argument("--flavour", choices=FLAVOURS, default="portable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=_CHILD_WARNING + "%(message)s")
    export_onnx(args.folder, args.out, args.flavour)
    return 0


if __name__ == "__main__":
    sys.exit(main())
