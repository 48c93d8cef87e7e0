"""The re-ranking benchmark's arithmetic on made-up rows: which row the fp32 target counts, what
the table says each row ran, and the FLOP count it divides times by."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.bench_rerank import CROSS_ENCODER, fastest_fp32, model_flops, render


def row(engine: str, precision: str, ratio: float) -> dict[str, object]:
    return {
        "engine": engine,
        "precision": precision,
        "p50_ms": 1000 * ratio,
        "best_ms": 900 * ratio,
        "cpu_p50_ms": 1900 * ratio,
        "pairs_per_s": 100 / ratio,
        "gflops_best": 200 / ratio,
        "ratio_to_cross_encoder": ratio,
        "cpu_ratio_to_cross_encoder": ratio,
    }


def result(rows: list[dict[str, object]]) -> dict[str, Any]:
    return {
        "model": "distilbert-base",
        "pairs": 100,
        "pair_tokens": 10240,
        "model_gflop": 889.0,
        "rounds": 5,
        "rows": rows,
        "skipped": {"distilmarco openvino int8": "BackendError: no"},
    }


def test_the_target_counts_our_fastest_fp32_row_never_int8() -> None:
    res = result(
        [
            row(CROSS_ENCODER, "fp32", 1.0),
            row("distilmarco torch fp32", "fp32", 0.9),
            row("distilmarco onnx fp32", "fp32", 0.8),
            row("distilmarco onnx int8", "int8", 0.3),
        ]
    )
    assert fastest_fp32(res)["engine"] == "distilmarco onnx fp32"
    text = render([res], "some CPU", 2, False, (0.5, 0.7), 180.0)
    assert "distilmarco onnx fp32, 0.80x CrossEncoder's p50 (target 0.7x: not met)." in text
    assert "| distilmarco onnx int8 | int8 | 300 |" in text
    assert "| distilmarco openvino int8 | skipped: BackendError: no |" in text
    assert "rerun on a quiet machine" not in text


def test_a_loaded_run_says_so_in_its_verdict() -> None:
    res = result([row(CROSS_ENCODER, "fp32", 1.0), row("distilmarco openvino fp32", "fp32", 0.6)])
    text = render([res], "some CPU", 2, False, (0.5, 4.2), 180.0)
    assert "(target 0.7x: met; load above 2.0, rerun on a quiet machine to confirm)" in text


def test_model_flops_of_the_distilbert_base_workload() -> None:
    pytest.importorskip("transformers")
    lengths = [100, 110]
    # 6 layers x (2 x (4 x 768^2 + 2 x 768 x 3072) per token + 4 x T^2 x 768 per pair)
    expected = 6 * (2 * (4 * 768**2 + 2 * 768 * 3072) * 210 + 4 * 768 * (100**2 + 110**2))
    assert model_flops("distilbert-base", lengths) == pytest.approx(expected)
