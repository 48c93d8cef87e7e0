"""Clustering of embeddings and cluster descriptions.

Methods: k-means (``k`` given, or chosen by silhouette), agglomerative with a distance threshold,
HDBSCAN (all from scikit-learn), and fast threshold-based community detection (chunked, written
here because no well-kept library offers it on arrays). Every method works on unit-length vectors,
so Euclidean geometry matches cosine similarity.

Each cluster is described by keywords (class-based TF-IDF: the words that are frequent in one
cluster and rare across the others) and its most central texts (nearest to the centroid).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from distilmarco.apps._extras import need
from distilmarco.apps.similarity import DEFAULT_BLOCK_ELEMENTS, as_matrix, iter_blocks
from distilmarco.errors import InputError
from distilmarco.vectors import normalize_rows

log = logging.getLogger(__name__)

METHODS = ("kmeans", "agglomerative", "hdbscan", "communities")
NOISE = -1
# Agglomerative clustering holds an N x N distance matrix; refuse sizes that would not fit.
AGGLOMERATIVE_MAX_ITEMS = 20_000
SILHOUETTE_SAMPLE = 5_000


@dataclass(frozen=True, eq=False)
class Clustering:
    """``labels[i]`` is row i's cluster (0..n_clusters-1) or -1 for noise / unassigned rows."""

    labels: np.ndarray
    method: str
    n_clusters: int
    silhouette: float | None = None  # cosine silhouette (sampled above 5,000 rows)
    params: dict[str, float | int | str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterSummary:
    label: int
    size: int
    keywords: tuple[str, ...]
    central: tuple[int, ...]  # row indices, most central first


def _check(vectors: np.ndarray, minimum: int = 2) -> np.ndarray:
    x = as_matrix(vectors)
    if x.shape[0] < minimum:
        raise InputError(f"clustering needs at least {minimum} items, got {x.shape[0]}")
    return normalize_rows(x)


def silhouette(vectors: np.ndarray, labels: np.ndarray, seed: int = 0) -> float | None:
    """Cosine silhouette of a labelling (noise excluded); None when it is undefined."""
    need("sklearn", "apps", "silhouette scores")
    from sklearn.metrics import silhouette_score

    mask = labels != NOISE
    x, y = vectors[mask], labels[mask]
    n_labels = len(np.unique(y))
    if n_labels < 2 or n_labels >= len(y):
        return None
    sample = SILHOUETTE_SAMPLE if len(y) > SILHOUETTE_SAMPLE else None
    return float(silhouette_score(x, y, metric="cosine", sample_size=sample, random_state=seed))


def kmeans(
    vectors: np.ndarray,
    k: int | None = None,
    *,
    k_min: int = 2,
    k_max: int = 20,
    seed: int = 0,
    n_init: int = 3,
) -> Clustering:
    """k-means on unit vectors. With ``k=None`` tries ``k_min..k_max`` and keeps the best
    silhouette."""
    need("sklearn", "apps", "k-means clustering")
    from sklearn.cluster import KMeans

    x = _check(vectors)
    n = x.shape[0]

    def fit(kk: int) -> np.ndarray:
        km = KMeans(n_clusters=kk, n_init=n_init, random_state=seed)
        return np.asarray(km.fit_predict(x), dtype=np.int64)

    if k is not None:
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        if k > n:
            raise InputError(f"asked for {k} clusters but there are only {n} items")
        labels = fit(k)
        return Clustering(labels, "kmeans", k, silhouette(x, labels, seed), {"k": k})
    if k_min < 2 or k_max < k_min:
        raise InputError(f"need 2 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    hi = min(k_max, n - 1)
    if hi < k_min:
        raise InputError(f"choosing k needs more than {k_min} items, got {n}")
    best: tuple[float, int, np.ndarray] | None = None
    for kk in range(k_min, hi + 1):
        labels = fit(kk)
        score = silhouette(x, labels, seed)
        log.info("k-means k=%d silhouette=%s", kk, score)
        if score is not None and (best is None or score > best[0]):
            best = (score, kk, labels)
    if best is None:
        raise InputError("no k in the range gave a defined silhouette")
    return Clustering(best[2], "kmeans", best[1], best[0], {"k_min": k_min, "k_max": k_max})


def agglomerative(
    vectors: np.ndarray, distance_threshold: float = 0.5, *, linkage: str = "average"
) -> Clustering:
    """Agglomerative clustering on cosine distance, merging while clusters are closer than
    ``distance_threshold`` (0 = identical, 2 = opposite). Holds an N x N matrix."""
    need("sklearn", "apps", "agglomerative clustering")
    from sklearn.cluster import AgglomerativeClustering

    x = _check(vectors)
    if x.shape[0] > AGGLOMERATIVE_MAX_ITEMS:
        raise InputError(
            f"agglomerative clustering of {x.shape[0]} items needs an N x N matrix; the limit is "
            f"{AGGLOMERATIVE_MAX_ITEMS} (use kmeans, hdbscan or communities)"
        )
    if linkage not in ("average", "complete", "single"):
        raise InputError(f"unknown linkage {linkage!r}; choose average, complete or single")
    if distance_threshold <= 0:
        raise InputError(f"distance_threshold must be positive, got {distance_threshold}")
    model = AgglomerativeClustering(
        n_clusters=None, distance_threshold=distance_threshold, metric="cosine", linkage=linkage
    )
    labels = np.asarray(model.fit_predict(x), dtype=np.int64)
    n_clusters = int(labels.max()) + 1
    return Clustering(
        labels,
        "agglomerative",
        n_clusters,
        silhouette(x, labels),
        {"distance_threshold": distance_threshold, "linkage": linkage},
    )


def hdbscan(
    vectors: np.ndarray, min_cluster_size: int = 5, *, min_samples: int | None = None
) -> Clustering:
    """HDBSCAN (density-based; finds the number of clusters and marks noise as -1)."""
    need("sklearn", "apps", "HDBSCAN clustering")
    from sklearn.cluster import HDBSCAN

    x = _check(vectors)
    if min_cluster_size < 2:
        raise InputError(f"min_cluster_size must be at least 2, got {min_cluster_size}")
    if min_cluster_size > x.shape[0]:
        raise InputError(
            f"min_cluster_size {min_cluster_size} is larger than the {x.shape[0]} items"
        )
    model = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True)
    labels = np.asarray(model.fit_predict(x), dtype=np.int64)
    labels[labels < 0] = NOISE
    n_clusters = int(labels.max()) + 1 if (labels >= 0).any() else 0
    return Clustering(
        labels,
        "hdbscan",
        n_clusters,
        silhouette(x, labels),
        {"min_cluster_size": min_cluster_size, "min_samples": min_samples},
    )


def communities(
    vectors: np.ndarray,
    threshold: float = 0.75,
    *,
    min_size: int = 3,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> Clustering:
    """Threshold-based community detection.

    Every row's neighbours are the rows with cosine >= ``threshold`` (itself included). Rows are
    taken in decreasing neighbour count; each forms a community of its still-unassigned
    neighbours if there are at least ``min_size`` of them. Rows in no community get -1. The
    score matrix is scanned block by block; memory grows with the number of neighbour links.
    """
    x = _check(vectors, minimum=1)
    if min_size < 1:
        raise InputError(f"min_size must be at least 1, got {min_size}")
    if not -1.0 <= threshold <= 1.0:
        raise InputError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    n = x.shape[0]
    neighbours: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * n
    for start, block in iter_blocks(x, x, "cosine", block_elements=block_elements):
        for r in range(block.shape[0]):
            row = block[r]
            idx = np.flatnonzero(row >= threshold)
            if len(idx) >= min_size:
                neighbours[start + r] = idx[np.argsort(-row[idx], kind="stable")]
    counts = np.array([len(v) for v in neighbours])
    labels = np.full(n, NOISE, dtype=np.int64)
    next_label = 0
    for centre in np.argsort(-counts, kind="stable"):
        if counts[centre] < min_size:
            break
        members = neighbours[centre][labels[neighbours[centre]] == NOISE]
        if len(members) >= min_size:
            labels[members] = next_label
            next_label += 1
    return Clustering(
        labels,
        "communities",
        next_label,
        silhouette(x, labels),
        {"threshold": threshold, "min_size": min_size},
    )


def keywords(
    texts: Sequence[str],
    labels: np.ndarray,
    *,
    n_keywords: int = 8,
    stop_words: str | None = "english",
) -> dict[int, tuple[str, ...]]:
    """Class-based TF-IDF keywords per cluster label (noise, -1, included as its own class).

    A cluster's documents are pooled into one; a word scores ``tf(word, cluster) *
    log(1 + A / f(word))`` with tf normalised per cluster, A the mean word count per cluster and
    f the word's count over all clusters.
    """
    need("sklearn", "apps", "cluster keywords")
    from sklearn.feature_extraction.text import CountVectorizer

    if len(texts) != len(labels):
        raise InputError(f"{len(texts)} texts but {len(labels)} labels")
    classes = sorted({int(v) for v in labels})
    pooled = [
        " ".join(t for t, lab in zip(texts, labels, strict=True) if lab == c) for c in classes
    ]
    stop = _stop_words(stop_words)
    try:
        counts = CountVectorizer(
            tokenizer=lambda text: content_words(text, stop), token_pattern=None, lowercase=False
        ).fit(pooled)
    except ValueError:  # empty vocabulary: only stop words or no words at all
        return {c: () for c in classes}
    m = counts.transform(pooled).toarray().astype(np.float64)  # (C, V)
    vocab = counts.get_feature_names_out()
    tf = m / np.maximum(m.sum(axis=1, keepdims=True), 1.0)
    avg_words = m.sum() / len(classes)
    idf = np.log1p(avg_words / np.maximum(m.sum(axis=0), 1.0))
    score = tf * idf
    out: dict[int, tuple[str, ...]] = {}
    for row, c in enumerate(classes):
        top = np.argsort(-score[row], kind="stable")[:n_keywords]
        out[c] = tuple(str(vocab[i]) for i in top if score[row, i] > 0)
    return out


WORD = re.compile(r"[^\W_][\w'’]*")


def content_words(text: str, stop: frozenset[str] = frozenset()) -> list[str]:
    """The words of ``text`` worth naming a cluster by: lowercased, a possessive 's dropped,
    contractions (don't, isn't, I've) and one-letter words left out, as are ``stop`` words;
    apostrophes stay inside words, so no stubs such as ``doesn`` or ``ve``."""
    words = []
    for token in WORD.findall(text.lower().replace("’", "'")):
        token = token.rstrip("'")
        if token.endswith("'s"):
            token = token[:-2]
        if "'" in token or len(token) < 2 or token in stop:
            continue
        words.append(token)
    return words


def _stop_words(stop_words: str | None) -> frozenset[str]:
    if stop_words is None:
        return frozenset()
    if stop_words != "english":
        raise InputError(f"stop_words {stop_words!r} is not 'english' or None")
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def central(
    vectors: np.ndarray, labels: np.ndarray, n_central: int = 3
) -> dict[int, tuple[int, ...]]:
    """Per cluster, the rows closest (cosine) to its centroid, most central first."""
    x = normalize_rows(as_matrix(vectors))
    out: dict[int, tuple[int, ...]] = {}
    for c in sorted({int(v) for v in labels}):
        rows = np.flatnonzero(labels == c)
        centroid = x[rows].mean(axis=0)
        sims = x[rows] @ centroid
        out[c] = tuple(int(rows[i]) for i in np.argsort(-sims, kind="stable")[:n_central])
    return out


def describe(
    texts: Sequence[str],
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    n_keywords: int = 8,
    n_central: int = 3,
) -> list[ClusterSummary]:
    """One summary per cluster, largest first (noise last)."""
    if len(texts) != len(labels) or len(labels) != len(vectors):
        raise InputError(
            f"texts ({len(texts)}), vectors ({len(vectors)}) and labels ({len(labels)}) differ in length"
        )
    kw = keywords(texts, labels, n_keywords=n_keywords)
    cen = central(vectors, labels, n_central)
    sizes = {c: int((labels == c).sum()) for c in kw}
    order = sorted(kw, key=lambda c: (c == NOISE, -sizes[c], c))
    return [ClusterSummary(c, sizes[c], kw[c], cen[c]) for c in order]


# The settings each method takes (the other ``ClusterOptions`` fields must stay None).
TAKES: dict[str, tuple[str, ...]] = {
    "kmeans": ("clusters", "k_max"),
    "agglomerative": ("threshold",),
    "hdbscan": ("min_size",),
    "communities": ("threshold", "min_size"),
}


@dataclass(frozen=True)
class ClusterOptions:
    """A clustering method and the settings it takes; None means the method's default.

    ``clusters``/``k_max``: k-means (None: the best silhouette for k up to ``k_max``, 20);
    ``threshold``: agglomerative cosine distance (0.5) or communities similarity (0.75);
    ``min_size``: hdbscan / communities smallest cluster (5).
    """

    method: str = "kmeans"
    clusters: int | None = None
    k_max: int | None = None
    threshold: float | None = None
    min_size: int | None = None
    seed: int = 0

    def check(self, names: Mapping[str, str] | None = None) -> ClusterOptions:
        """``self``, or an error naming an unknown method or a setting it does not take;
        ``names`` spells the fields in the caller's terms (e.g. CLI options)."""
        name = (names or {}).get
        if self.method not in TAKES:
            raise InputError(
                f"unknown clustering method {self.method!r}; choose one of {', '.join(METHODS)}"
            )
        takes = TAKES[self.method]
        given = {"clusters": self.clusters, "k_max": self.k_max, "threshold": self.threshold}
        given["min_size"] = self.min_size
        stray = [f for f, value in given.items() if value is not None and f not in takes]
        if stray:
            raise InputError(
                f"{' and '.join(name(f, f) for f in stray)} do not apply to "
                f"{name('method', 'method')} {self.method} "
                f"(it takes {', '.join(name(f, f) for f in takes)})"
            )
        return self


def cluster(vectors: np.ndarray, options: ClusterOptions | str = "kmeans") -> Clustering:
    """Cluster ``vectors`` as ``options`` says (a method name alone: its defaults)."""
    o = (ClusterOptions(options) if isinstance(options, str) else options).check()
    size = 5 if o.min_size is None else o.min_size
    if o.method == "kmeans":
        return kmeans(vectors, o.clusters, k_max=20 if o.k_max is None else o.k_max, seed=o.seed)
    if o.method == "agglomerative":
        return agglomerative(vectors, 0.5 if o.threshold is None else o.threshold)
    if o.method == "hdbscan":
        return hdbscan(vectors, size)
    return communities(vectors, 0.75 if o.threshold is None else o.threshold, min_size=size)
