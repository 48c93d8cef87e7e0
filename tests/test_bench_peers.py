"""The peers benchmark's arithmetic: which engines each issue-25 target compares, on made-up rows."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_peers import markdown, targets, worker_env


def row(engine: str, library: str, precision: str, tps: float, p50: float) -> dict[str, object]:
    return {
        "engine": engine,
        "library": library,
        "precision_run": precision,
        "seconds_all": [1.0],
        "useful_tokens_per_s": tps,
        "vs_st_torch": None,
        "p50_ms": p50,
        "p99_ms": p50 * 2,
    }


ROWS = [
    row("st-torch", "peer", "fp32", 1000, 20.0),
    row("st-openvino", "peer", "bf16", 4000, 9.0),  # as shipped: bf16 on this CPU
    row("st-openvino-int8", "peer", "int8/bf16", 5000, 6.0),
    row("st-onnx-int8", "peer", "int8", 4500, 5.0),
    row("torch-fp32", "distilmarco", "fp32", 1500, 15.0),
    row("onnx-fp32", "distilmarco", "fp32", 1300, 12.0),
    row("torch-bf16", "distilmarco", "bf16", 4400, 9.5),
    row("openvino-int8", "distilmarco", "int8", 6000, 5.5),
]


def test_targets_compare_within_each_precision() -> None:
    got = {t["target"].split(":")[0].split(" single")[0]: t for t in targets(ROWS)}
    int8 = got["int8 mix"]
    assert int8["value"] == 6000 / 5000 and int8["met"] and int8["by"] == "openvino-int8"
    assert "st-openvino-int8" in int8["target"]  # int8 with bf16 between matmuls is int8
    bf16 = got["bf16 mix"]
    assert bf16["value"] == 4400 / 4000 and not bf16["met"] and "st-openvino" in bf16["target"]
    fp32 = got["fp32 mix >= 1.4x sentence-transformers torch"]
    assert fp32["value"] == 1.5 and fp32["met"] and fp32["by"] == "torch-fp32"
    p50 = {k: v for k, v in got.items() if "p50" in v["target"]}
    by_family = {v["target"].split()[0]: v for v in p50.values()}
    assert by_family["fp32"]["met"] and by_family["fp32"]["by"] == "onnx-fp32"
    assert not by_family["bf16"]["met"]  # 9.5 ms against the peer's 9.0
    assert not by_family["int8"]["met"] and by_family["int8"]["value"] == 5.5 / 5.0


def test_markdown_names_the_precision_each_engine_ran() -> None:
    res = {
        "workload": {
            "description": "mix",
            "texts": 1,
            "tokens": 2,
            "mean_tokens": 2,
            "max_tokens": 2,
        },
        "processor": "cpu",
        "threads": 2,
        "rounds": 3,
        "queries": 5,
        "load_average": (1.0, 1.0, 1.0),
        "quick": False,
        "rows": ROWS,
        "skipped": {"fastembed": "ImportError: x"},
        "targets": targets(ROWS),
    }
    text = markdown(res)
    assert "| st-openvino | bf16 | 4000 |" in text and "| openvino-int8 | int8 | 6000 |" in text
    assert "`fastembed` (ImportError: x)" in text and "| NO |" in text


def test_our_engines_are_served_by_the_same_worker_as_the_peers(tiny_model_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Ours run in a worker process like the peers (same protocol, same timing inside it)."""
    import sys

    from benchmarks.bench_peers import Worker
    from benchmarks.common import ROOT

    worker = Worker(Path(sys.executable), 1, str(ROOT / "src"))
    try:
        common = {"folder": str(tiny_model_dir), "work": str(tmp_path), "calibration": []}
        loaded = worker.ask(cmd="load", key="torch-fp32", threads=1, **common)
        assert loaded.get("precision") == "fp32", loaded
        ran = worker.ask(cmd="run", key="torch-fp32", texts=["a query", "another one"])
        assert 0 < ran["seconds"] < 60
        assert "error" in worker.ask(cmd="run", key="onnx-int8", texts=["not loaded"])
    finally:
        worker.close()


def test_both_workers_get_the_same_thread_settings(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Ours and the peers' differ only in PYTHONPATH; OpenMP sleeps when idle in both."""
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    ours, peers = worker_env(2, "/repo/src"), worker_env(2)
    assert ours.pop("PYTHONPATH") == "/repo/src" and "PYTHONPATH" not in peers
    assert ours == peers
    assert peers["OMP_WAIT_POLICY"] == "PASSIVE" and peers["OMP_NUM_THREADS"] == "2"
