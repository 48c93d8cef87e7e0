"""Outlier channels of the FFN output projections, split off before int8 quantisation.

Dynamic int8 quantises each activation tensor with one scale, set by its largest value. The
input of a BERT FFN output projection (a GELU output, 4 x hidden wide) has a few channels whose
values run 10-20 times larger than the rest, so one scale leaves the other channels a handful of
levels. Here each such projection ``x @ W`` becomes ``(x * keep) @ W + x[:, :, top] @ W[top]``:
the big channels (``top``, the ``OUTLIER_CHANNELS`` largest) go through a small fp32 matmul and
are zeroed in the input of the int8 one. In fp32 the split computes the same sum.

The channels are found by running the fp32 graph on calibration text made of the model's own
vocabulary (whole words in random order): no data set needed; random words find most of the
channels that real text drives hardest. Only the output projections are split: splitting the FFN
input projections made int8 worse. The quality and speed figures behind ``OUTLIER_CHANNELS`` are
in ``benchmarks/results/engine-notes.md``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from distilmarco.tokenizer import Tokenizer

OUTLIER_CHANNELS = 32
CALIBRATION_TEXTS = 256
_CALIBRATION_BATCH = 32
_FFN_OUT = re.compile(r"layer\.(\d+)/(?:ffn/lin2|output/dense)/")


def ffn_output_projections(model: Any) -> list[Any]:
    """The FFN output projection ``MatMul`` nodes of an exported graph, whose weight (input 1)
    is a constant."""
    constants = {i.name for i in model.graph.initializer}
    return [
        n
        for n in model.graph.node
        if n.op_type == "MatMul" and ffn_output_layer(n) is not None and n.input[1] in constants
    ]


def ffn_output_layer(node: Any) -> int | None:
    """The layer number of an FFN output projection node (``MatMul`` or ``Gemm``), else None."""
    found = _FFN_OUT.search(node.name)
    return int(found.group(1)) if found else None


def calibration_texts(tokenizer: Tokenizer, count: int = CALIBRATION_TEXTS) -> list[str]:
    """``count`` texts of 4-120 whole vocabulary words in random order (a fixed seed)."""
    words = tokenizer.words()
    if not words:
        raise ValueError("the tokenizer's vocabulary has no whole words to calibrate with")
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, int(rng.integers(4, 121)))) for _ in range(count)]


def channel_peaks(
    model: Any, tensors: list[str], texts: list[str], tokenizer: Tokenizer
) -> list[np.ndarray]:
    """The largest |value| of each channel (last axis) of each named tensor, over the real
    (unpadded) tokens of ``texts``, running ``model`` (an fp32 ONNX graph) in ONNX Runtime."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in tensors:
        probe.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(
        probe.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    feeds = {i.name for i in session.get_inputs()}
    ids = tokenizer.encode(texts).ids
    peaks: list[np.ndarray] = [np.zeros(0, np.float32) for _ in tensors]
    for lo in range(0, len(ids), _CALIBRATION_BATCH):
        batch = ids[lo : lo + _CALIBRATION_BATCH]
        width = max(len(x) for x in batch)
        input_ids = np.full((len(batch), width), tokenizer.pad_id, np.int64)
        mask = np.zeros((len(batch), width), np.int64)
        for row, x in enumerate(batch):
            input_ids[row, : len(x)], mask[row, : len(x)] = x, 1
        feed = {"input_ids": input_ids, "attention_mask": mask}
        outputs = session.run(tensors, {k: v for k, v in feed.items() if k in feeds})
        for i, value in enumerate(outputs):
            top = np.abs(value[mask.astype(bool)]).max(axis=0)
            peaks[i] = top if not len(peaks[i]) else np.maximum(peaks[i], top)
    return peaks


def split_outliers(model: Any, tokenizer: Tokenizer, channels: int = OUTLIER_CHANNELS) -> list[str]:
    """Split the ``channels`` largest input channels off every FFN output projection of
    ``model`` (changed in place); returns the names of the fp32 matmuls added, which the
    quantiser must leave alone."""
    from onnx import helper, numpy_helper

    nodes = ffn_output_projections(model)
    if not nodes:
        return []
    peaks = channel_peaks(
        model, [n.input[0] for n in nodes], calibration_texts(tokenizer), tokenizer
    )
    weights = {i.name: i for i in model.graph.initializer}
    kept: list[str] = []
    for node, peak in zip(nodes, peaks, strict=True):
        w = numpy_helper.to_array(weights[node.input[1]])
        top = np.sort(np.argsort(-peak, kind="stable")[:channels]).astype(np.int64)
        keep = np.ones(w.shape[0], np.float32)
        keep[top] = 0.0
        base = node.name.rsplit("/", 1)[0] + "/outliers"
        x, y = node.input[0], node.output[0]
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(keep, f"{base}/keep"),
                numpy_helper.from_array(top, f"{base}/channels"),
                numpy_helper.from_array(np.ascontiguousarray(w[top]), f"{base}/weight"),
            ]
        )
        split = [
            helper.make_node("Mul", [x, f"{base}/keep"], [f"{base}/rest"], name=f"{base}/Mul"),
            helper.make_node(
                "Gather", [x, f"{base}/channels"], [f"{base}/x"], name=f"{base}/Gather", axis=-1
            ),
            helper.make_node(
                "MatMul", [f"{base}/x", f"{base}/weight"], [f"{base}/y"], name=f"{base}/MatMul"
            ),
        ]
        node.input[0], node.output[0] = f"{base}/rest", f"{base}/main"
        add = helper.make_node("Add", [f"{base}/main", f"{base}/y"], [y], name=f"{base}/Add")
        at = list(model.graph.node).index(node)
        for offset, new in enumerate(split):
            model.graph.node.insert(at + offset, new)
        model.graph.node.insert(at + len(split) + 1, add)
        kept.append(f"{base}/MatMul")
    return kept
