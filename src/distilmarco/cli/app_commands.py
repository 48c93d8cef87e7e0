"""``distilmarco similar | dedup | cluster | recommend | map``: thin commands over
``distilmarco.apps``; the ``classify`` group is in ``cli/classify.py``, the shared reading and
writing in ``cli/rows.py``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from distilmarco.cli.app import (
    BackendOption,
    BatchTokensOption,
    ColumnOption,
    DeviceOption,
    ModelOption,
    PrecisionOption,
    app,
    engine,
    err,
    make_encoder,
    styled,
)
from distilmarco.cli.rows import (
    IndexOption,
    MetricOption,
    OutputOption,
    check_outputs,
    embed_texts,
    emit,
    open_index,
    read_labels,
    read_texts,
    refuse_with_index,
)
from distilmarco.errors import InputError

# --- similar ---------------------------------------------------------------------------------


@app.command(
    epilog='\b\nExample: distilmarco similar "how do I reset my PIN?" --index docs.db -k 5'
)
def similar(
    text: str | None = typer.Argument(None, help="A text to compare (with --index or --to)"),
    index: Path | None = IndexOption,
    doc_id: str | None = typer.Option(None, "--id", help="Document of the index to match"),
    source: Path | None = typer.Option(None, "--from", help="File of texts to compare"),
    target: Path | None = typer.Option(None, "--to", help="File of texts to compare against"),
    pairwise: bool = typer.Option(False, help="--from row i against --to row i only"),
    k: int = typer.Option(5, "-k", "--top-k", help="Matches per text"),
    metric: str = MetricOption,
    model: str | None = ModelOption,
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    column: str | None = ColumnOption,
    output: Path | None = OutputOption,
) -> None:
    """Most similar texts: TEXT (or --id) in an --index, or texts of --from/TEXT against --to."""
    from distilmarco.apps import similarity

    check_outputs(output)

    if index is not None:
        refuse_with_index(**{"--column": column, "--from": source})
        refuse_with_index(**{"--to": target, "--pairwise": pairwise})
        if (text is None) == (doc_id is None):
            raise InputError("with --index give either TEXT or --id")
        with open_index(index, model, engine(backend, precision, device, batch_tokens)) as ix:
            if doc_id is not None:
                vec, exclude = ix.vectors([doc_id])[0], [doc_id]
            else:
                vec, exclude = ix.encoder.encode([text or ""], truncation="count")[0], []
            found = ix.search_vector(vec, k, exclude_ids=exclude)
        emit([{"id": h.id, "score": h.score, "passage": h.passage} for h in found], output)
        return
    if doc_id is not None:
        raise InputError("--id names a document of an --index; give --index too")
    if target is None or (source is None) == (text is None):
        raise InputError("give --index with TEXT or --id, or --to FILE with TEXT or --from FILE")
    encoder = make_encoder(model, engine(backend, precision, device, batch_tokens))
    queries = [text or ""] if source is None else read_texts(source, column)
    corpus = read_texts(target, column)
    qv, cv = embed_texts(encoder, queries), embed_texts(encoder, corpus)
    if pairwise:
        scores = similarity.pairwise(qv, cv, metric)
        rows = [
            {"row": i, "a": a, "b": b, "score": float(s)}
            for i, (a, b, s) in enumerate(zip(queries, corpus, scores, strict=True))
        ]
    else:
        hits = similarity.top_k(qv, cv, k, metric)
        rows = [
            {
                "query_row": i,
                "query": queries[i],
                "row": int(j),
                "text": corpus[j],
                "score": float(s),
            }
            for i in range(len(queries))
            for j, s in zip(hits.indices[i], hits.scores[i], strict=True)
            if j >= 0
        ]
    emit(rows, output)


# --- dedup -----------------------------------------------------------------------------------


@app.command(epilog="\b\nExample: distilmarco dedup texts.txt --threshold 0.9 --keep unique.txt")
def dedup(
    input: Path | None = typer.Argument(
        None, help="Texts: lines, .jsonl, .csv/.tsv or .parquet (- reads stdin)"
    ),
    index: Path | None = IndexOption,
    threshold: float = typer.Option(0.9, help="Minimum similarity of a duplicate pair"),
    top_k: int = typer.Option(100, "--neighbours", help="Candidate neighbours kept per text"),
    method: str = typer.Option("auto", help="exact, ann (HNSW) or auto (ANN above 100k texts)"),
    metric: str = MetricOption,
    pairs: bool = typer.Option(False, "--pairs", help="Output the pairs instead of the groups"),
    keep: Path | None = typer.Option(None, help="Write the texts without duplicates here"),
    model: str | None = ModelOption,
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    column: str | None = ColumnOption,
    output: Path | None = OutputOption,
) -> None:
    """Find duplicate and paraphrase texts (pairs above --threshold, grouped into sets)."""
    from distilmarco.apps import dedup as dd
    from distilmarco.apps.similarity import check_metric

    check_outputs(output, ("--keep", keep))

    if (input is None) == (index is None):
        raise InputError("give either INPUT or --index")
    dd.check_method(method)
    check_metric(metric)
    if index is not None:
        refuse_with_index(**{"--column": column})
        if keep is not None:
            raise InputError("--keep writes texts from an INPUT file; with --index use the ids")
        with open_index(index, model, engine(backend, precision, device, batch_tokens)) as ix:
            docs = list(ix.documents())
            ids = [d.id for d in docs]
            texts = [d.text for d in docs]
            vectors = ix.vectors(ids)
        keys: list[Any] = list(ids)
    else:
        texts = read_texts(input, column)  # type: ignore[arg-type]
        keys = list(range(len(texts)))
        vectors = embed_texts(
            make_encoder(model, engine(backend, precision, device, batch_tokens)), texts
        )
    found = dd.mine_pairs(
        vectors, threshold=threshold, top_k_per_item=top_k, metric=metric, method=method
    )
    groups = dd.duplicate_groups(found, len(texts))
    key = "ids" if index is not None else "rows"
    rows: list[dict[str, Any]]
    if pairs:
        rows = [
            {
                "a": keys[p.i],
                "b": keys[p.j],
                "score": p.score,
                "text_a": texts[p.i],
                "text_b": texts[p.j],
            }
            for p in found
        ]
    else:
        rows = [
            {"group": g, "size": len(m), key: [keys[i] for i in m], "texts": [texts[i] for i in m]}
            for g, m in enumerate(groups)
        ]
    emit(rows, output)
    mask = dd.keep_mask(groups, len(texts))
    if keep is not None:
        keep.write_text(
            "".join(t.replace("\n", " ") + "\n" for t, k_ in zip(texts, mask, strict=True) if k_),
            encoding="utf-8",
        )
    err.print(
        f"{len(texts)} texts: {len(found)} pair(s) >= {threshold}, {len(groups)} duplicate "
        f"group(s), {int(mask.sum())} unique",
        highlight=False,
    )


# The CLI's names of the ``ClusterOptions`` fields, for its error messages.
CLUSTER_FLAGS = {
    "method": "--method",
    "clusters": "--clusters",
    "k_max": "--k-max",
    "threshold": "--threshold",
    "min_size": "--min-size",
}


# --- cluster ---------------------------------------------------------------------------------


@app.command(
    epilog="\b\nExample: distilmarco cluster texts.txt --clusters 20 --summary clusters.json"
)
def cluster(
    input: Path = typer.Argument(
        ..., help="Texts: lines, .jsonl, .csv/.tsv or .parquet (- reads stdin)"
    ),
    method: str = typer.Option("kmeans", help="kmeans, agglomerative, hdbscan or communities"),
    k: int | None = typer.Option(
        None, "--clusters", help="k-means clusters (default: best silhouette)"
    ),
    k_max: int | None = typer.Option(None, help="kmeans: largest k tried when choosing k [20]"),
    threshold: float | None = typer.Option(
        None, help="agglomerative: cosine distance (0.5); communities: similarity (0.75)"
    ),
    min_size: int | None = typer.Option(None, help="hdbscan / communities: smallest cluster [5]"),
    keywords: int = typer.Option(8, help="Keywords per cluster"),
    central: int = typer.Option(3, help="Most central texts shown per cluster"),
    seed: int = typer.Option(0),
    model: str | None = ModelOption,
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    column: str | None = ColumnOption,
    output: Path | None = OutputOption,
    summary: Path | None = typer.Option(None, help="Write the cluster summaries as JSON here"),
) -> None:
    """Cluster texts; writes each text's cluster and describes every cluster."""
    from distilmarco.apps import cluster as clu

    check_outputs(output, ("--summary", summary))

    options = clu.ClusterOptions(method, k, k_max, threshold, min_size, seed).check(CLUSTER_FLAGS)
    texts = read_texts(input, column)
    vectors = embed_texts(
        make_encoder(model, engine(backend, precision, device, batch_tokens)), texts
    )
    result = clu.cluster(vectors, options)
    summaries = clu.describe(texts, vectors, result.labels, n_keywords=keywords, n_central=central)
    sil = "n/a" if result.silhouette is None else f"{result.silhouette:.3f}"
    noise = int((result.labels == clu.NOISE).sum())
    said = f"{result.method}: {result.n_clusters} cluster(s), silhouette {sil}"
    if method in ("hdbscan", "communities"):
        said += f"; {noise} of {len(texts)} texts are noise (cluster {clu.NOISE}, in no cluster)"
    err.print(said)
    if summary is not None:
        summary.write_text(
            json.dumps(
                [
                    {"cluster": s.label, "size": s.size, "keywords": list(s.keywords),
                     "central": [texts[i] for i in s.central]}
                    for s in summaries
                ],
                ensure_ascii=False,
                indent=2,
            ),
            encoding="utf-8",
        )  # fmt: skip
    rows = [
        {"row": i, "cluster": int(c), "text": t}
        for i, (t, c) in enumerate(zip(texts, result.labels, strict=True))
    ]
    if output is not None:
        emit(rows, output)
    else:
        for s in summaries:
            err.print(
                styled((f"cluster {s.label}", "bold"), f" ({s.size}): {', '.join(s.keywords)}"),
            )
        emit(rows, None)


# --- recommend -------------------------------------------------------------------------------


@app.command(
    epilog="\b\nExample: distilmarco recommend --index docs.db --like DOC1 --unlike DOC2 -k 10"
)
def recommend(
    index: Path | None = IndexOption,
    input: Path | None = typer.Option(None, "--input", "-i", help="Texts file instead of an index"),
    like: list[str] = typer.Option([], "--like", help="Liked id (row number with --input)"),
    unlike: list[str] = typer.Option([], "--unlike", help="Disliked id (row number with --input)"),
    like_text: list[str] = typer.Option([], help="A liked text"),
    unlike_text: list[str] = typer.Option([], help="A disliked text"),
    k: int = typer.Option(10, "-k", "--top-k", help="Recommendations"),
    negative_weight: float = typer.Option(0.5, help="Weight of the disliked examples"),
    model: str | None = ModelOption,
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    column: str | None = ColumnOption,
    output: Path | None = OutputOption,
) -> None:
    """More like --like / --like-text and less like --unlike / --unlike-text; inputs excluded."""
    from distilmarco.apps import recommend as rec

    check_outputs(output)

    if (input is None) == (index is None):
        raise InputError("give either --index or --input")
    if index is not None:
        refuse_with_index(**{"--column": column})
        with open_index(index, model, engine(backend, precision, device, batch_tokens)) as ix:
            hits = rec.recommend_in_index(
                ix,
                like=like,
                unlike=unlike,
                like_texts=like_text,
                unlike_texts=unlike_text,
                k=k,
                negative_weight=negative_weight,
            )
        emit([{"id": h.id, "score": h.score, "passage": h.passage} for h in hits], output)
        return
    texts = read_texts(input, column)  # type: ignore[arg-type]
    encoder = make_encoder(model, engine(backend, precision, device, batch_tokens))
    vectors = embed_texts(encoder, texts)
    recs = rec.recommend(
        vectors,
        like=_row_numbers(like, "--like"),
        unlike=_row_numbers(unlike, "--unlike"),
        like_vectors=encoder.encode(like_text) if like_text else None,
        unlike_vectors=encoder.encode(unlike_text) if unlike_text else None,
        k=k,
        negative_weight=negative_weight,
    )
    emit([{"row": r.row, "score": r.score, "text": texts[r.row]} for r in recs], output)


def _row_numbers(values: Sequence[str], option: str) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError as exc:
        raise InputError(f"{option} takes row numbers (from 0) with --input: {exc}") from exc


# --- map -------------------------------------------------------------------------------------


@app.command("map", epilog="\b\nExample: distilmarco map texts.txt -o map.html --clusters 10")
def map_(
    input: Path = typer.Argument(
        ..., help="Texts: lines, .jsonl, .csv/.tsv or .parquet (- reads stdin)"
    ),
    output: Path = typer.Option(..., "--output", "-o", help="map.html (interactive) or map.png"),
    label: str | None = typer.Option(None, "--label-column", help="Column/field to colour by"),
    clusters: int | None = typer.Option(None, help="Colour by k-means with this many clusters"),
    projection: str = typer.Option("auto", help="auto, umap, tsne or pca"),
    width: int = typer.Option(1200, help="PNG width in pixels"),
    height: int = typer.Option(900, help="PNG height in pixels"),
    title: str = typer.Option("distilmarco map", help="Page or image title"),
    seed: int = typer.Option(0),
    model: str | None = ModelOption,
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    column: str | None = ColumnOption,
) -> None:
    """Draw the texts on a 2-D map (HTML: hover shows the text; PNG: a picture)."""
    from distilmarco.apps import maps
    from distilmarco.apps.cluster import kmeans

    suffix = output.suffix.lower()
    if suffix not in (".html", ".png"):
        raise InputError(f"output {output} must end in .html or .png")
    check_outputs(None, ("--output", output))
    if label is not None and clusters is not None:
        raise InputError("colour by --label-column or by --clusters, not both")
    texts = read_texts(input, column)
    colour = read_labels(input, label) if label is not None else None
    vectors = embed_texts(
        make_encoder(model, engine(backend, precision, device, batch_tokens)), texts
    )
    if clusters is not None:
        colour = [f"cluster {c}" for c in kmeans(vectors, clusters, seed=seed).labels]
    coords = maps.project_2d(vectors, projection, seed=seed)
    if suffix == ".png":
        maps.write_png(output, coords, colour, width=width, height=height, title=title)
    else:
        maps.write_html(output, coords, texts, colour, title=title)
    err.print(f"wrote a map of {len(texts)} texts to {output}", highlight=False)
