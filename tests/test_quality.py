"""Real quality: the published STS Benchmark figure for all-MiniLM-L6-v2, reproduced (the only
place it is asserted for the torch engine; the ``eval sts`` CLI test checks it computes the same
score as this one)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import StsVectors
from scipy.stats import spearmanr


@pytest.mark.slow
@pytest.mark.xdist_group("sts_minilm")
def test_sts_benchmark_spearman_matches_published(sts_minilm: StsVectors) -> None:
    rho = spearmanr(sts_minilm.cosines(), np.array([r[2] for r in sts_minilm.pairs])).statistic
    assert len(sts_minilm.pairs) == 1379 and len(sts_minilm.texts) == 2552
    assert abs(rho - 0.8203) <= 0.002, rho
