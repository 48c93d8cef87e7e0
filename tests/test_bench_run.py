"""The benchmark runner's contract: discover bench_<name>.py, run main(out_dir, quick), join the
markdown. Plus the pure arithmetic the encode benchmark reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import benchmarks
from benchmarks import run
from benchmarks.workloads import flops_per_text, st_padding_fraction

FAKE = """
import json
from pathlib import Path

def main(out_dir: Path, quick: bool) -> None:
    (out_dir / "fake.json").write_text(json.dumps({"quick": quick}))
    (out_dir / "fake.md").write_text("## Fake section\\n\\n| a |\\n|---|\\n| 1 |\\n")
"""

BROKEN = """
def main(out_dir, quick):
    raise RuntimeError("boom")
"""


@pytest.fixture
def fake_benchmarks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "extra"
    pkg.mkdir()
    (pkg / "bench_fake.py").write_text(FAKE)
    (pkg / "bench_broken.py").write_text(BROKEN)
    monkeypatch.setattr(benchmarks, "__path__", [*benchmarks.__path__, str(pkg)])
    for name in ("benchmarks.bench_fake", "benchmarks.bench_broken"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return pkg


def test_discovers_the_encode_benchmark() -> None:
    assert "encode" in run.discover()


def test_runs_one_benchmark_and_joins_markdown(fake_benchmarks: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    (out).mkdir()
    (out / "other.md").write_text("## not a benchmark of ours")
    assert run.main(["--only", "fake", "--quick", "--out", str(out)]) == 0
    assert json.loads((out / "fake.json").read_text()) == {"quick": True}
    readme = (out / "README.md").read_text()
    assert "## Fake section" in readme and "| 1 |" in readme
    assert "not a benchmark of ours" not in readme
    assert "--quick" in readme


def test_a_failing_benchmark_does_not_hide_the_others(
    fake_benchmarks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run.main(["--only", "broken", "--only", "fake", "--out", str(tmp_path)])
    assert code == 1
    assert (tmp_path / "fake.md").is_file()
    assert "benchmark(s) failed: ['broken']" in capsys.readouterr().err


def test_unknown_benchmark_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--only", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown benchmark(s) ['nope']" in capsys.readouterr().err
    assert not (tmp_path / "README.md").exists()


def test_flops_per_token_matches_the_design_figure() -> None:
    # DESIGN.md: DistilBERT-base costs 87.3 MFLOP per token at 128 tokens.
    assert flops_per_text(128) / 128 / 1e6 == pytest.approx(87.3, abs=0.05)
    # 6 layers x (4*768^2 + 2*768*3072 + 2*1*768) MACs x 2 FLOPs for a 1-token text
    assert flops_per_text(1) == 2 * 6 * (4 * 768**2 + 2 * 768 * 3072 + 2 * 768)


def test_sentence_transformers_padding_fraction() -> None:
    # batches of 2 after sorting by characters: (10, 8) -> 20 slots; (4, 2) -> 8 slots; 4 of 28 pad
    texts = ["x" * 100, "x" * 80, "x" * 40, "x" * 20]
    assert st_padding_fraction([10, 8, 4, 2], texts, batch_size=2) == pytest.approx(4 / 28)


def test_encode_targets_are_judged_from_the_rows() -> None:
    from benchmarks.bench_encode import targets

    def row(workload: str, combo: str, tps: float, peak: float = 0.5) -> dict[str, object]:
        return {
            "workload": workload,
            "combo": combo,
            "useful_tokens_per_s": tps,
            "fraction_of_matmul_peak": peak,
        }

    rows = [
        row("mix", "st-torch", 100),
        row("mix", "torch-fp32", 120),
        row("mix", "onnx-fp32", 140),
        row("mix", "onnx-int8", 260),
        row("p128", "st-torch", 100, 0.6),
        row("p128", "onnx-fp32", 150, 0.85),
    ]
    lat = {"st-torch": {"p50_ms": 50.0}, "onnx-int8": {"p50_ms": 30.0}}
    got = {t["target"]: (round(t["value"], 3), t["met"], t["by"]) for t in targets(rows, lat)}
    assert got == {
        "fp32 mix >= 1.3x sentence-transformers torch": (1.4, True, "onnx-fp32"),
        "fp32 128-token passages >= 80% of matmul peak": (0.85, True, "onnx-fp32"),
        "int8 mix >= 2.5x sentence-transformers torch fp32": (2.6, True, "onnx-int8"),
        "int8 mix ahead of sentence-transformers' fastest": (2.6, True, "onnx-int8"),
        "single query p50 <= 0.7x sentence-transformers": (0.6, True, "onnx-int8"),
    }
    slow = [r if r["combo"] != "onnx-int8" else row("mix", "onnx-int8", 200) for r in rows]
    met = {
        t["target"]: t["met"]
        for t in targets(slow, {"st-torch": {"p50_ms": 50.0}, "x": {"p50_ms": 40.0}})
    }
    assert met["int8 mix >= 2.5x sentence-transformers torch fp32"] is False
    assert met["single query p50 <= 0.7x sentence-transformers"] is False
