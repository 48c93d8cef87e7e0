"""The engine server of ``bench_peers``, driven by JSON lines on stdin, one reply per line.

One copy runs in the peers' own virtual environment (sentence-transformers' engines and
fastembed; it imports nothing from distilmarco there), another in the project's (our engines,
keys ``<backend>-<precision>``), so both sides are loaded, warmed up and timed the same way.

    {"cmd": "load", "key": "st-onnx-int8", "folder": "...", "work": "...", "calibration": [...],
     "threads": 2}
    {"cmd": "run", "key": "...", "texts": [...]}       -> {"seconds": s}
Every reply carries "error" instead when the command failed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

Encode = Callable[[list[str]], Any]


def _onnx_int8_config() -> str:
    """sentence-transformers' dynamic int8 config for this CPU, as its docs advise."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    for flag, config in (("avx512_vnni", "avx512_vnni"), ("avx512f", "avx512"), ("avx2", "avx2")):
        if flag in flags:
            return config
    return "arm64"


def _ov_precision(model: Any) -> str:
    """The inference precision sentence-transformers' OpenVINO model compiled with."""
    compiled = model[0].auto_model.request  # optimum-intel keeps the compiled model there
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    name = str(hint.get_type_name() if hasattr(hint, "get_type_name") else hint)
    return {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(name, name)


def _local_calibration(texts: list[str]) -> None:
    """sentence-transformers' static int8 export calibrates on a Hub data set; give it our texts."""
    from datasets import Dataset
    from optimum.intel.openvino import OVQuantizer

    def calibration(self: Any, dataset_name: str, **kwargs: Any) -> Any:
        prep = kwargs.get("preprocess_function")
        n = kwargs.get("num_samples") or len(texts)
        data = Dataset.from_dict({"sentence": texts[:n]})
        return data.map(prep, batched=True, remove_columns=["sentence"]) if prep else data

    OVQuantizer.get_calibration_dataset = calibration


def _distilbert_inputs(config: Path) -> None:
    """The bench model borrows a BERT tokenizer; DistilBERT takes no token type ids (as the
    published msmarco-distilbert-base-v4 tokenizer config says)."""
    raw = json.loads(config.read_text())
    raw["model_input_names"] = ["input_ids", "attention_mask"]
    config.write_text(json.dumps(raw, indent=2))


def _st(folder: Path, **kwargs: Any) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", **kwargs)


def _ours(key: str, folder: Path, threads: int | None) -> tuple[Encode, str]:
    """Our engine ``<backend>-<precision>`` with its default calibration and batch budget."""
    from distilmarco import Encoder

    backend, precision = key.split("-")
    enc = Encoder(folder, backend=backend, precision=precision, threads=threads)
    return (lambda t: enc.encode(t, truncation="count")), enc.info.precision


def load(
    key: str, folder: Path, work: Path, calibration: list[str], threads: int | None = None
) -> tuple[Encode, str]:
    """``key``'s encode function and the precision it runs."""
    if not key.startswith(("st-", "fastembed")):
        return _ours(key, folder, threads)
    if key == "fastembed":
        return _fastembed(folder, work)
    copy = work / "model"
    if not copy.exists():
        shutil.copytree(folder, copy)
        _distilbert_inputs(copy / "tokenizer_config.json")
    quiet = {"show_progress_bar": False}
    if key == "st-torch":
        m = _st(copy)
        return (lambda t: m.encode(t, **quiet)), "fp32"
    if key == "st-onnx":
        m = _st(copy, backend="onnx")
        if not (copy / "onnx" / "model.onnx").exists():  # exported on the fly: keep it
            m.save_pretrained(str(copy))
        return (lambda t: m.encode(t, **quiet)), "fp32"
    if key == "st-onnx-int8":
        from sentence_transformers import export_dynamic_quantized_onnx_model

        config = _onnx_int8_config()
        name = f"onnx/model_qint8_{config}.onnx"
        if not (copy / name).exists():
            base = _st(copy, backend="onnx")
            export_dynamic_quantized_onnx_model(base, config, str(copy))
        m = _st(copy, backend="onnx", model_kwargs={"file_name": name})
        return (lambda t: m.encode(t, **quiet)), "int8"
    if key in ("st-openvino", "st-openvino-f32"):
        kwargs: dict[str, Any] = {}
        if key == "st-openvino-f32":
            kwargs["model_kwargs"] = {"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}}
        m = _st(copy, backend="openvino", **kwargs)
        if not (copy / "openvino" / "openvino_model.xml").exists():
            m.save_pretrained(str(copy))
        return (lambda t: m.encode(t, **quiet)), _ov_precision(m)
    if key == "st-openvino-int8":
        from sentence_transformers import export_static_quantized_openvino_model

        name = "openvino/openvino_model_qint8_quantized.xml"
        if not (copy / name).exists():
            _local_calibration(calibration)
            base = _st(copy, backend="openvino")
            export_static_quantized_openvino_model(base, None, str(copy))
        m = _st(copy, backend="openvino", model_kwargs={"file_name": name})
        return (lambda t: m.encode(t, **quiet)), "int8/" + _ov_precision(m)
    raise ValueError(f"unknown peer {key!r}")


def _fastembed(folder: Path, work: Path) -> tuple[Encode, str]:
    """fastembed on sentence-transformers' own ONNX export of the same model (mean pooling)."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    graph = work / "model" / "onnx" / "model.onnx"
    if not graph.exists():  # made by st-onnx's load
        raise FileNotFoundError(f"{graph} (load st-onnx first)")
    local = work / "fastembed"
    if not local.exists():
        local.mkdir()
        shutil.copy(graph, local / "model.onnx")
        for name in (
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "config.json",
            "vocab.txt",
        ):
            if (folder / name).exists():
                shutil.copy(folder / name, local / name)
    TextEmbedding.add_custom_model(
        model="local/bench-model",
        pooling=PoolingType.MEAN,
        normalization=False,
        sources=ModelSource(hf="local/bench-model"),
        dim=768,
        model_file="model.onnx",
    )
    m = TextEmbedding("local/bench-model", specific_model_path=str(local))
    return (lambda t: list(m.embed(t))), "fp32"


def main() -> int:
    # Replies go to the original stdout; anything the libraries print (C code included) to stderr.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    engines: dict[str, Encode] = {}
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["cmd"] == "load":
                start = time.perf_counter()
                encode, precision = load(
                    req["key"],
                    Path(req["folder"]),
                    Path(req["work"]),
                    req.get("calibration", []),
                    req.get("threads"),
                )
                encode(["warm up"])
                engines[req["key"]] = encode
                reply: dict[str, Any] = {
                    "precision": precision,
                    "load_s": time.perf_counter() - start,
                }
            elif req["cmd"] == "run":
                encode = engines[req["key"]]
                start = time.perf_counter()
                encode(req["texts"])
                reply = {"seconds": time.perf_counter() - start}
            else:
                reply = {"error": f"unknown command {req['cmd']!r}"}
        except Exception as exc:  # report it to the parent, keep serving the other engines
            tail = traceback.format_exc().strip().splitlines()[-1]
            reply = {"error": f"{type(exc).__name__}: {str(exc)[:300]} ({tail[:200]})"}
        print(json.dumps(reply), file=replies, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
