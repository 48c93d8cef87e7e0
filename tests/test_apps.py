"""Apps on small arrays: similarity, top-k, dedup, clustering, recommendation, classification,
maps and their errors. Real-data checks live in test_apps_banking77.py and test_apps_sts.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distilmarco.apps import classify, cluster, dedup, maps, recommend, similarity
from distilmarco.errors import InputError, ModelFormatError


def rand(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


# --- similarity ------------------------------------------------------------------------------


def test_matrix_matches_sklearn_for_every_metric() -> None:
    from sklearn.metrics.pairwise import cosine_similarity, euclidean_distances

    a, b = rand(7), rand(5, seed=1)
    np.testing.assert_allclose(
        similarity.matrix(a, b, "cosine"), cosine_similarity(a, b), atol=1e-5
    )
    np.testing.assert_allclose(similarity.matrix(a, b, "dot"), a @ b.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        similarity.matrix(a, b, "euclidean"), -euclidean_distances(a, b), atol=1e-4
    )
    for metric in similarity.METRICS:
        full = similarity.matrix(a, a[::-1], metric)
        np.testing.assert_allclose(
            similarity.pairwise(a, a[::-1], metric),
            np.diag(full),
            atol=1e-4,
        )
        assert full.dtype == np.float32


def test_iter_blocks_bounds_memory_and_reassembles_the_matrix() -> None:
    a, b = rand(103), rand(41, seed=1)
    blocks = list(similarity.iter_blocks(a, b, "euclidean", block_elements=41 * 10))
    assert len(blocks) == 11 and all(blk.shape[0] <= 10 for _, blk in blocks)
    assert [s for s, _ in blocks] == list(range(0, 103, 10))
    np.testing.assert_allclose(
        np.concatenate([blk for _, blk in blocks]), similarity.matrix(a, b, "euclidean"), atol=1e-5
    )


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_chunked_top_k_equals_brute_force(metric: str) -> None:
    q, c = rand(57, seed=2), rand(300, seed=3)
    full = similarity.matrix(q, c, metric).astype(np.float64)
    expect = np.argsort(-full, axis=1, kind="stable")[:, :7]
    got = similarity.top_k(q, c, 7, metric, block_elements=500)  # many row and column chunks
    np.testing.assert_array_equal(got.indices, expect)
    np.testing.assert_allclose(got.scores, np.take_along_axis(full, expect, axis=1), atol=1e-4)


def test_top_k_ties_exclude_self_and_padding() -> None:
    c = np.repeat(rand(1), 6, axis=0)  # six identical rows: every score ties
    got = similarity.top_k(c[:2], c, 3, block_elements=64)
    np.testing.assert_array_equal(got.indices, [[0, 1, 2], [0, 1, 2]])
    got = similarity.top_k(c, c, 3, exclude_self=True, block_elements=64)
    np.testing.assert_array_equal(got.indices[0], [1, 2, 3])
    np.testing.assert_array_equal(got.indices[4], [0, 1, 2])
    small = similarity.top_k(rand(2), rand(2, seed=1), 5)
    assert small.indices.shape == (2, 5) and (small.indices[:, 2:] == -1).all()
    assert np.isneginf(small.scores[:, 2:]).all()


def test_similarity_errors() -> None:
    with pytest.raises(InputError, match="unknown metric 'manhattan'; choose one of cosine"):
        similarity.matrix(rand(2), rand(2), "manhattan")
    with pytest.raises(InputError, match="dimension mismatch: a has 16-d vectors, b has 8-d"):
        similarity.matrix(rand(2), rand(2, 8))
    with pytest.raises(InputError, match="empty"):
        similarity.top_k(np.zeros((0, 4)), rand(3, 4), 2)
    with pytest.raises(InputError, match="NaN"):
        similarity.matrix(np.array([[np.nan, 1.0]]), rand(1, 2))
    with pytest.raises(InputError, match="as many rows"):
        similarity.pairwise(rand(3), rand(2))
    with pytest.raises(InputError, match="k must be at least 1"):
        similarity.top_k(rand(3), rand(3), 0)


# --- duplicates ------------------------------------------------------------------------------


def test_mine_pairs_and_groups_on_planted_duplicates() -> None:
    base = rand(50, seed=4)
    x = np.concatenate(
        [base, base[[3, 3, 10]] + 0.01 * rand(3, seed=5)]
    )  # rows 50, 51 ~ 3; 52 ~ 10
    pairs = dedup.mine_pairs(x, threshold=0.95, block_elements=200)
    found = {(p.i, p.j) for p in pairs}
    assert found == {(3, 50), (3, 51), (50, 51), (10, 52)}
    assert all(p.score >= 0.95 for p in pairs)
    assert [p.score for p in pairs] == sorted((p.score for p in pairs), reverse=True)
    groups = dedup.duplicate_groups(pairs, len(x))
    assert groups == [[3, 50, 51], [10, 52]]
    keep = dedup.keep_mask(groups, len(x))
    assert keep.sum() == 50 and not keep[[50, 51, 52]].any()


def test_mine_pairs_ann_agrees_with_exact() -> None:
    pytest.importorskip("usearch")
    x = rand(2000, 24, seed=6)
    exact = dedup.mine_pairs(x, top_k_per_item=5, method="exact")
    ann = dedup.mine_pairs(x, top_k_per_item=5, method="ann")
    top = {(p.i, p.j) for p in exact[:500]}
    recall = len(top & {(p.i, p.j) for p in ann}) / len(top)
    assert recall >= 0.98
    sc = {(p.i, p.j): p.score for p in exact}
    common = [p for p in ann if (p.i, p.j) in sc][:200]
    np.testing.assert_allclose(
        [p.score for p in common], [sc[(p.i, p.j)] for p in common], atol=1e-4
    )


def test_dedup_errors() -> None:
    with pytest.raises(InputError, match="at least two items, got 1"):
        dedup.mine_pairs(rand(1))
    with pytest.raises(InputError, match="unknown method 'fast'"):
        dedup.mine_pairs(rand(3), method="fast")
    with pytest.raises(InputError, match="out of range"):
        dedup.duplicate_groups([dedup.Pair(0, 9, 1.0)], 3)


# --- clustering ------------------------------------------------------------------------------


def blobs(per: int = 30, k: int = 4, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 3
    x = np.concatenate([c + 0.3 * rng.standard_normal((per, d)) for c in centres]).astype(
        np.float32
    )
    return x, np.repeat(np.arange(k), per)


@pytest.mark.parametrize(
    "run",
    [
        lambda x: cluster.kmeans(x, 4),
        lambda x: cluster.kmeans(x, None, k_max=8),
        lambda x: cluster.agglomerative(x, 0.3),
        lambda x: cluster.hdbscan(x, 5),
        lambda x: cluster.communities(x, 0.8, min_size=5),
    ],
    ids=["kmeans", "kmeans-auto-k", "agglomerative", "hdbscan", "communities"],
)
def test_every_method_recovers_separated_blobs(run) -> None:  # type: ignore[no-untyped-def]
    from sklearn.metrics import adjusted_rand_score

    x, y = blobs()
    result = run(x)
    assert result.n_clusters == 4
    assert adjusted_rand_score(y, result.labels) == pytest.approx(1.0)
    assert result.silhouette is not None and result.silhouette > 0.5


def test_keywords_and_central_texts() -> None:
    texts = [
        "the cat sat on the mat",
        "a cat and another cat",
        "cats purr",
        "stock markets fell today",
        "the market rallied",
        "markets and stock prices",
    ]
    labels = np.array([0, 0, 0, 1, 1, 1])
    kw = cluster.keywords(texts, labels, n_keywords=2)
    assert kw[0][0] == "cat" and set(kw[1]) == {"markets", "stock"}
    x = np.array([[1, 0], [0.9, 0.1], [0.5, 0.5], [0, 1], [0.1, 0.9], [0.6, 0.4]], np.float32)
    cen = cluster.central(x, labels, 2)
    assert cen[0] == (1, 0) and cen[1] == (4, 3)
    summary = cluster.describe(texts, x, np.array([0, 0, 0, 1, 1, -1]))
    assert [s.label for s in summary] == [0, 1, -1] and [s.size for s in summary] == [3, 2, 1]


def test_cluster_errors() -> None:
    with pytest.raises(InputError, match="asked for 5 clusters but there are only 3 items"):
        cluster.kmeans(rand(3), 5)
    with pytest.raises(InputError, match="at least 2 items, got 1"):
        cluster.kmeans(rand(1), 1)
    with pytest.raises(InputError, match="empty"):
        cluster.hdbscan(np.zeros((0, 4)))
    with pytest.raises(InputError, match="min_cluster_size 10 is larger than the 4 items"):
        cluster.hdbscan(rand(4), 10)
    with pytest.raises(InputError, match="unknown clustering method 'dbscan'"):
        cluster.cluster(rand(4), "dbscan")
    with pytest.raises(InputError, match="3 texts but 2 labels"):
        cluster.keywords(["a", "b", "c"], np.array([0, 1]))


# --- recommendation --------------------------------------------------------------------------


def test_recommend_follows_likes_and_avoids_unlikes() -> None:
    # Corpus on a circle: the angle says how alike items are.
    angles = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    c = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    recs = recommend.recommend(c, like=[0], k=4)
    assert [r.row for r in recs][:2] in ([1, 35], [35, 1])  # neighbours of 0 degrees, not 0
    assert 0 not in [r.row for r in recs]
    # Liking 0 and disliking 3 (30 degrees) pushes the results to the other side of 0.
    recs = recommend.recommend(c, like=[0], unlike=[3], k=3, negative_weight=1.0)
    assert [r.row for r in recs] == [33, 32, 34] or all(r.row > 18 for r in recs)
    assert all(r.row not in (0, 3) for r in recs)
    recs = recommend.recommend(c, like_vectors=c[9], k=2, exclude=[9])
    assert {r.row for r in recs} == {8, 10}


def test_recommend_errors() -> None:
    c = rand(5)
    with pytest.raises(InputError, match="at least one liked item"):
        recommend.recommend(c, unlike=[1])
    with pytest.raises(InputError, match="like row 7 is out of range for a corpus of 5 items"):
        recommend.recommend(c, like=[7])
    with pytest.raises(InputError, match="cancel out"):
        recommend.recommend(c, like=[1], unlike=[1], negative_weight=1.0)
    with pytest.raises(InputError, match="nothing left"):
        recommend.recommend(c, like=[0, 1], exclude=[2, 3, 4])
    with pytest.raises(InputError, match="dimension mismatch"):
        recommend.recommend(c, like_vectors=rand(1, 3))


# --- classification --------------------------------------------------------------------------


def test_classifier_binary_logreg_matches_sklearn_and_round_trips(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = blobs(per=20, k=2)
    labels = ["spam" if v else "ham" for v in y]
    clf = classify.fit_classifier(x, labels)
    ref = LogisticRegression(max_iter=1000, random_state=0).fit(x, labels)
    np.testing.assert_allclose(clf.predict_proba(x), ref.predict_proba(x), atol=1e-6)
    assert clf.predict(x) == labels
    clf.save(tmp_path / "m")
    back = classify.Classifier.load(tmp_path / "m")
    assert back.classes == ("ham", "spam")
    np.testing.assert_array_equal(back.predict_proba(x), clf.predict_proba(x))


def test_classifier_integer_labels_and_knn() -> None:
    x, y = blobs(per=10, k=3)
    clf = classify.fit_classifier(x, y.tolist(), method="knn", k=3)
    assert clf.predict(x) == y.tolist()
    proba = clf.predict_proba(x[:2])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_classifier_errors(tmp_path: Path) -> None:
    x = rand(4)
    with pytest.raises(InputError, match="at least two classes"):
        classify.fit_classifier(x, ["a"] * 4)
    with pytest.raises(InputError, match="3 entries but there are 4 vectors"):
        classify.fit_classifier(x, ["a", "b", "a"])
    with pytest.raises(InputError, match="unknown method 'svm'; choose one of logreg, knn"):
        classify.fit_classifier(x, ["a", "b"] * 2, method="svm")
    with pytest.raises(InputError, match="mix strings and integers"):
        classify.fit_classifier(x, ["a", 1, "a", 1])
    with pytest.raises(ModelFormatError, match="not a saved classifier"):
        classify.Classifier.load(tmp_path)
    (tmp_path / "classifier.json").write_text('{"format": "other"}')
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ModelFormatError, match="not a distilmarco-classifier file"):
        classify.Classifier.load(tmp_path)
    with pytest.raises(InputError, match="at least two labels"):
        classify.zero_shot(x, x[:1], ["only"])
    with pytest.raises(InputError, match="label names repeat"):
        classify.zero_shot(x, x[:2], ["a", "a"])
    with pytest.raises(InputError, match="absent from train_y"):
        classify.mteb_protocol(x, ["a", "b"] * 2, x[:1], ["c"])


def test_mteb_undersampling_follows_the_shuffled_order() -> None:
    labels = ["a", "b", "a", "a", "b", "c"]
    order = np.array([5, 4, 3, 2, 1, 0])
    np.testing.assert_array_equal(classify.undersample(labels, 1, order), [5, 4, 3])
    np.testing.assert_array_equal(classify.undersample(labels, 2, order), [5, 4, 3, 2, 1])


# --- maps ------------------------------------------------------------------------------------


def test_projection_shapes_and_errors() -> None:
    x, _ = blobs(per=10, k=3)
    for method in ("pca", "tsne"):
        xy = maps.project_2d(x, method)
        assert xy.shape == (30, 2) and np.isfinite(xy).all()
    with pytest.raises(InputError, match="at least 3 items, got 2"):
        maps.project_2d(x[:2], "pca")
    with pytest.raises(InputError, match="unknown projection 'mds'"):
        maps.project_2d(x, "mds")
    with pytest.raises(InputError, match="2 texts for 3 points"):
        maps.render_html(np.zeros((3, 2)), ["a", "b"])


def test_png_is_a_real_image_of_the_requested_size(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    x, y = blobs(per=10, k=3)
    path = tmp_path / "map.png"
    maps.write_png(path, maps.project_2d(x, "pca"), [f"c{v}" for v in y], width=640, height=480)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[:2] == (480, 640)
    # Not blank: the three colours of the clusters are drawn.
    colours = {tuple(np.round(p[:3], 2)) for p in img.reshape(-1, img.shape[2])}
    assert len(colours) > 10


def test_html_escapes_text_and_is_self_contained() -> None:
    page = maps.render_html(
        np.array([[0, 0], [1, 1], [2, 0]]), ["</script><b>x</b>", "b & c", "ü"], ["a", "b", "a"]
    )
    assert "</script><b>" not in page and "\\u003c/script>" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page


def test_mining_memory_stays_bounded() -> None:
    import tracemalloc

    x = rand(10_000, 32, seed=7)  # the full score matrix would take 400 MB
    tracemalloc.start()
    try:
        pairs = dedup.mine_pairs(x, threshold=0.7, top_k_per_item=10, block_elements=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB"
    assert all(p.score >= 0.7 for p in pairs)
