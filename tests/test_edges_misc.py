"""Small contracts of the layers under the edges: activations are refused by name, torch's
process-wide thread count is set by the torch backend only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distilmarco.errors import ModelFormatError


def test_activation_fn_refuses_an_unknown_name() -> None:
    from distilmarco.model.transformer import activation_fn

    assert isinstance(activation_fn("relu"), torch.nn.ReLU)
    assert activation_fn("gelu_tanh").approximate == "tanh"  # type: ignore[union-attr]
    with pytest.raises(ModelFormatError, match=r"activation 'swish' is not supported.*gelu"):
        activation_fn("swish")


def test_the_torch_backend_sets_torchs_threads(tiny_model_dir: Path) -> None:
    from distilmarco.backends.torch_backend import TorchBackend
    from distilmarco.encoder import Encoder
    from distilmarco.errors import InputError
    from distilmarco.model.st_format import SentenceModelSpec

    before = torch.get_num_threads()
    other = 2 if before != 2 else 3
    try:
        TorchBackend.from_spec(SentenceModelSpec.from_folder(tiny_model_dir), threads=other)
        assert torch.get_num_threads() == other
        Encoder(tiny_model_dir, backend="torch", threads=1)
        assert torch.get_num_threads() == 1
        with pytest.raises(InputError, match="threads must be an integer >= 1, got 0"):
            Encoder(tiny_model_dir, backend="torch", threads=0)
    finally:
        torch.set_num_threads(before)


def test_cluster_options_refuse_settings_their_method_does_not_take() -> None:
    import numpy as np

    from distilmarco.apps.cluster import ClusterOptions, agglomerative, cluster
    from distilmarco.errors import InputError

    with pytest.raises(InputError, match=r"^threshold do not apply to method kmeans \(it takes"):
        ClusterOptions("kmeans", threshold=0.3).check()
    with pytest.raises(InputError, match=r"^--clusters do not apply to --method hdbscan"):
        ClusterOptions("hdbscan", clusters=3).check(
            {"clusters": "--clusters", "method": "--method"}
        )
    with pytest.raises(InputError, match="unknown clustering method 'dbscan'"):
        cluster(np.eye(4, dtype=np.float32), "dbscan")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.01, (5, 8)) + 1, rng.normal(0, 0.01, (5, 8)) - 1])
    x[:, 1::2] *= -1
    got = cluster(x.astype(np.float32), ClusterOptions("agglomerative", threshold=0.5))
    want = agglomerative(x.astype(np.float32), 0.5)
    assert got.n_clusters == want.n_clusters == 2
    np.testing.assert_array_equal(got.labels, want.labels)


def test_recommend_in_index_builds_the_query_from_ids_and_texts() -> None:
    import numpy as np

    from distilmarco.apps.recommend import recommend_in_index, recommendation_query

    stored = {"a": np.array([1.0, 0.0, 0.0]), "b": np.array([0.0, 1.0, 0.0])}
    asked: dict[str, object] = {}

    class FakeEncoder:
        def encode(self, texts: list[str], truncation: str = "warn") -> np.ndarray:
            assert truncation == "count"
            return np.array([[0.0, 0.0, 2.0] for _ in texts], dtype=np.float32)

    class FakeIndex:
        encoder = FakeEncoder()

        def vectors(self, ids: list[str]) -> np.ndarray:
            return np.stack([stored[i] for i in ids]).astype(np.float32)

        def search_vector(self, query: np.ndarray, k: int, *, exclude_ids: list[str]) -> list[str]:
            asked.update(query=query, k=k, exclude=exclude_ids)
            return ["hit"]

    found = recommend_in_index(
        FakeIndex(),  # type: ignore[arg-type]
        like=["a"],
        unlike=["b"],
        like_texts=["liked"],
        k=3,
        negative_weight=0.5,
    )
    assert found == ["hit"] and asked["k"] == 3 and asked["exclude"] == ["a", "b"]
    want = recommendation_query(
        np.array([[1, 0, 0], [0, 0, 2]], np.float32), np.array([[0, 1, 0]], np.float32)
    )
    np.testing.assert_allclose(asked["query"], want, atol=1e-6)  # type: ignore[arg-type]


def test_compare_records_report_metric_keys_by_label() -> None:
    from distilmarco.evaluation.compare import Combo, CompareRow, MetricKey, as_records
    from distilmarco.evaluation.ir import Throughput

    rows = [
        CompareRow(Combo("torch", "fp32"), {MetricKey("bm25", "nDCG@10"): 0.5}, Throughput(4, 40, 2.0)),
        CompareRow(Combo("onnx", "int8"), {MetricKey("bm25", "nDCG@10"): 0.25}, Throughput(4, 40, 1.0)),
        CompareRow(Combo("openvino", "fp32"), {}, Throughput(), "unavailable: not installed"),
    ]  # fmt: skip
    records = as_records(rows)
    assert records[1].deltas == {MetricKey("bm25", "nDCG@10"): -0.25}
    assert records[1].to_json() == {
        "backend": "onnx", "precision": "int8", "metrics": {"bm25 nDCG@10": 0.25},
        "delta_vs_torch_fp32": {"bm25 nDCG@10": -0.25}, "texts_per_second": 4.0,
        "tokens_per_second": 40.0, "seconds": 1.0, "error": None,
    }  # fmt: skip
    assert records[2].texts_per_second is None and records[2].label == "openvino/fp32"
    assert MetricKey("", "spearman").label == "spearman"


def test_every_eval_command_takes_the_shared_options() -> None:
    import inspect

    from distilmarco.cli import evaluate
    from distilmarco.cli.eval_run import EvalOptions

    shared = [f for f in EvalOptions.__dataclass_fields__]
    for command in (
        evaluate.ir,
        evaluate.sts,
        evaluate.classify,
        evaluate.cluster,
        evaluate.msmarco,
    ):
        params = list(inspect.signature(command).parameters)
        assert params[-len(shared) :] == shared and "options" not in params


def test_pair_scores_match_the_score_matrix_diagonal() -> None:
    import numpy as np

    from distilmarco.vectors import SIMILARITIES, pair_scores, prepare, score_matrix

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    for sim in SIMILARITIES:
        pa, pb = prepare(a, sim), prepare(b, sim)
        np.testing.assert_allclose(
            pair_scores(pa, pb, sim), np.diag(score_matrix(pa, pb, sim)), rtol=1e-5, atol=1e-5
        )
