"""Real quality: the published STS Benchmark figure for all-MiniLM-L6-v2, reproduced."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from distilmarco import Encoder


def test_sts_benchmark_spearman_matches_published(
    minilm_encoder: Encoder, sts_test: list[tuple[str, str, float]]
) -> None:
    a = minilm_encoder.encode([r[0] for r in sts_test], normalize=True)
    b = minilm_encoder.encode([r[1] for r in sts_test], normalize=True)
    cosine = (a * b).sum(axis=1)
    rho = spearmanr(cosine, np.array([r[2] for r in sts_test])).statistic
    assert len(sts_test) == 1379
    assert abs(rho - 0.8203) <= 0.002, rho
