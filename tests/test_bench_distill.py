"""The distillation benchmark is discovered by the runner and reports what its JSON holds."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_distill, run


def test_runner_discovers_the_distill_benchmark() -> None:
    assert "distill" in run.discover()


def test_markdown_reports_the_measured_figures(tmp_path: Path) -> None:
    speed = {
        "texts": 10,
        "seconds": {"teacher": [2.0, 2.2], "student": [1.0, 1.2]},
        "teacher_per_s": 5.0,
        "student_per_s": 10.0,
        "speedup": 2.0,
        "speedup_median": 1.83,
    }
    small = {
        "sentences": 1000,
        "options": bench_distill.SMALL_OPTIONS,
        "layers": [1, 3, 5],
        "steps": 31,
        "train_seconds": 12.0,
        "best_step": 31,
        "best_dev_spearman": 0.85,
        "teacher_sts_test": 0.8203,
        "student_sts_test": 0.8090,
        "speed": speed,
    }
    (tmp_path / "distill-small.json").write_text(json.dumps(small))
    bench_distill.write_markdown(tmp_path, quick=False)
    text = (tmp_path / "distill.md").read_text()
    assert "| distilled student | 3 | 0.8090 | 10 |" in text
    assert "Spearman difference -0.0113; encode speed-up 2.00x" in text
