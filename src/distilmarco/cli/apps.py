"""``distilmarco similar | dedup | cluster | recommend | classify | map``: thin commands over
``distilmarco.apps``. Rows go to stdout as JSONL (or to ``--output``: .jsonl or .csv); counts and
notices go to stderr."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from distilmarco.cli.app import (
    MODEL_ENV,
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
    out,
    styled,
)
from distilmarco.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from distilmarco.encoder import Encoder
    from distilmarco.index import Index
    from distilmarco.index.identity import Engine

IndexOption = typer.Option(None, "--index", help="Index file (see `distilmarco index`)")
OutputOption = typer.Option(
    None, "--output", "-o", help=".jsonl or .csv (default: JSONL on stdout)"
)
MetricOption = typer.Option("cosine", help="cosine, dot or euclidean (negated distance)")

classify_app = typer.Typer(
    help="Few-shot and zero-shot text classification.",
    epilog="\b\nExample: distilmarco classify train labelled.csv --label-column category -o clf/",
    no_args_is_help=True,
)
app.add_typer(classify_app, name="classify")


# --- helpers ---------------------------------------------------------------------------------


def _encoder(model: str | None, how: Engine) -> Encoder:
    return make_encoder(model, how)


def _read(
    path: Path, column: str | None, what: str = "texts", option: str = "--column"
) -> list[str]:
    from distilmarco.textio import read_text_file

    found = read_text_file(path, column, option)
    if found.blank_lines:
        err.print(f"{path}: skipped {found.blank_lines} blank line(s)", highlight=False)
    texts = found.texts
    if not texts:
        raise InputError(f"{path} holds no {what}")
    return texts


def _read_labels(path: Path, name: str) -> list[str]:
    """The ``name`` field/column of a table file (plain text files have no labels)."""
    if path.suffix.lower() not in (".jsonl", ".csv", ".tsv", ".parquet"):
        raise InputError(
            f"labels need a table (.csv, .tsv, .jsonl or .parquet); {path} is plain text"
        )
    return _read(path, name, "labels", "--label-column")


def _embed(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    return encoder.encode(list(texts), truncation="count", show_progress=len(texts) > 256)


def _refuse_with_index(**given: object) -> None:
    """Options that choose how texts are read do not apply to an index (it holds its texts):
    giving one is an error, not a silent no-op."""
    named = [name for name, value in given.items() if value not in (None, False, [], ())]
    if named:
        raise InputError(
            f"{' and '.join(named)} cannot be used with --index (the index holds its texts)"
        )


def _open_index(path: Path, model: str | None, how: Engine) -> Index:
    """The index at ``path``; ``model`` (another folder of the same model) is checked by content,
    and queries are embedded on the index's recorded engine unless ``how`` says otherwise."""
    from distilmarco.index import Index

    if not path.is_file():
        raise InputError(f"index file {path} does not exist")
    return Index(path, model, create=False, engine=how)


def _check_outputs(output: Path | None, *others: tuple[str, Path | None]) -> None:
    """Check every destination before any work: the right suffix, an existing writable folder."""
    from distilmarco.textio import check_destination

    if output is not None:
        if output.suffix.lower() not in (".jsonl", ".csv"):
            raise InputError(f"output {output} must end in .jsonl or .csv")
        check_destination(output)
    for option, path in others:
        if path is not None:
            check_destination(path, option)


def _emit(rows: Sequence[dict[str, Any]], output: Path | None) -> None:
    """Rows as JSONL on stdout, or into ``output`` (.jsonl, or .csv with lists joined by '|')."""
    if output is None:
        for row in rows:
            out.print(json.dumps(row, ensure_ascii=False), markup=False, highlight=False)
        return
    suffix = output.suffix.lower()
    if suffix == ".jsonl":
        with open(output, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    elif suffix == ".csv":
        with open(output, "w", encoding="utf-8", newline="") as f:
            fields = list(rows[0]) if rows else []
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {k: "|".join(map(str, v)) if isinstance(v, list) else v for k, v in row.items()}
                )
    else:
        raise InputError(f"output {output} must end in .jsonl or .csv")
    err.print(f"wrote {len(rows)} row(s) to {output}", highlight=False)


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

    _check_outputs(output)

    if index is not None:
        _refuse_with_index(**{"--column": column, "--from": source})
        _refuse_with_index(**{"--to": target, "--pairwise": pairwise})
        if (text is None) == (doc_id is None):
            raise InputError("with --index give either TEXT or --id")
        with _open_index(index, model, engine(backend, precision, device, batch_tokens)) as ix:
            if doc_id is not None:
                vec, exclude = ix.vectors([doc_id])[0], [doc_id]
            else:
                vec, exclude = ix.encoder.encode([text or ""], truncation="count")[0], []
            found = ix.search_vector(vec, k, exclude_ids=exclude)
        _emit([{"id": h.id, "score": h.score, "passage": h.passage} for h in found], output)
        return
    if doc_id is not None:
        raise InputError("--id names a document of an --index; give --index too")
    if target is None or (source is None) == (text is None):
        raise InputError("give --index with TEXT or --id, or --to FILE with TEXT or --from FILE")
    encoder = _encoder(model, engine(backend, precision, device, batch_tokens))
    queries = [text or ""] if source is None else _read(source, column)
    corpus = _read(target, column)
    qv, cv = _embed(encoder, queries), _embed(encoder, corpus)
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
    _emit(rows, output)


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

    _check_outputs(output, ("--keep", keep))

    if (input is None) == (index is None):
        raise InputError("give either INPUT or --index")
    dd.check_method(method)
    check_metric(metric)
    if index is not None:
        _refuse_with_index(**{"--column": column})
        if keep is not None:
            raise InputError("--keep writes texts from an INPUT file; with --index use the ids")
        with _open_index(index, model, engine(backend, precision, device, batch_tokens)) as ix:
            docs = list(ix.documents())
            ids = [d.id for d in docs]
            texts = [d.text for d in docs]
            vectors = ix.vectors(ids)
        keys: list[Any] = list(ids)
    else:
        texts = _read(input, column)  # type: ignore[arg-type]
        keys = list(range(len(texts)))
        vectors = _embed(_encoder(model, engine(backend, precision, device, batch_tokens)), texts)
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
    _emit(rows, output)
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

    _check_outputs(output, ("--summary", summary))

    if method not in clu.METHODS:
        raise InputError(
            f"unknown clustering method {method!r}; choose one of {', '.join(clu.METHODS)}"
        )
    given = {"--clusters": k, "--k-max": k_max, "--threshold": threshold, "--min-size": min_size}
    takes = {
        "kmeans": ("--clusters", "--k-max"),
        "agglomerative": ("--threshold",),
        "hdbscan": ("--min-size",),
        "communities": ("--threshold", "--min-size"),
    }[method]
    stray = [name for name, value in given.items() if value is not None and name not in takes]
    if stray:
        raise InputError(
            f"{' and '.join(stray)} do not apply to --method {method} (it takes {', '.join(takes)})"
        )
    texts = _read(input, column)
    vectors = _embed(_encoder(model, engine(backend, precision, device, batch_tokens)), texts)
    size = 5 if min_size is None else min_size
    if method == "kmeans":
        result = clu.kmeans(vectors, k, k_max=20 if k_max is None else k_max, seed=seed)
    elif method == "agglomerative":
        result = clu.agglomerative(vectors, 0.5 if threshold is None else threshold)
    elif method == "hdbscan":
        result = clu.hdbscan(vectors, size)
    else:
        result = clu.communities(vectors, 0.75 if threshold is None else threshold, min_size=size)
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
        _emit(rows, output)
    else:
        for s in summaries:
            err.print(
                styled((f"cluster {s.label}", "bold"), f" ({s.size}): {', '.join(s.keywords)}"),
            )
        _emit(rows, None)


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

    _check_outputs(output)

    if (input is None) == (index is None):
        raise InputError("give either --index or --input")
    if index is not None:
        _refuse_with_index(**{"--column": column})
        with _open_index(index, model, engine(backend, precision, device, batch_tokens)) as ix:
            parts = [ix.vectors(like)] if like else []
            negs = [ix.vectors(unlike)] if unlike else []
            if like_text:
                parts.append(ix.encoder.encode(like_text, truncation="count"))
            if unlike_text:
                negs.append(ix.encoder.encode(unlike_text, truncation="count"))
            if not parts:
                raise InputError("give at least one --like id or --like-text")
            import numpy as np

            query = rec.recommendation_query(
                np.concatenate(parts),
                np.concatenate(negs) if negs else None,
                negative_weight=negative_weight,
            )
            hits = ix.search_vector(query, k, exclude_ids=[*like, *unlike])
        _emit([{"id": h.id, "score": h.score, "passage": h.passage} for h in hits], output)
        return
    texts = _read(input, column)  # type: ignore[arg-type]
    encoder = _encoder(model, engine(backend, precision, device, batch_tokens))
    vectors = _embed(encoder, texts)
    recs = rec.recommend(
        vectors,
        like=_row_numbers(like, "--like"),
        unlike=_row_numbers(unlike, "--unlike"),
        like_vectors=encoder.encode(like_text) if like_text else None,
        unlike_vectors=encoder.encode(unlike_text) if unlike_text else None,
        k=k,
        negative_weight=negative_weight,
    )
    _emit([{"row": r.row, "score": r.score, "text": texts[r.row]} for r in recs], output)


def _row_numbers(values: Sequence[str], option: str) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError as exc:
        raise InputError(f"{option} takes row numbers (from 0) with --input: {exc}") from exc


# --- classify --------------------------------------------------------------------------------


@classify_app.command(
    "train",
    epilog="\b\nExample: distilmarco classify train labelled.csv --label-column category -o clf/",
)
def classify_train(
    input: Path = typer.Argument(..., help="Labelled texts: .csv/.tsv, .jsonl or .parquet"),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the classifier"),
    label: str = typer.Option("label", "--label-column", help="Column/field holding the label"),
    method: str = typer.Option("logreg", help="logreg or knn"),
    k: int = typer.Option(5, "--neighbours", help="Neighbours for knn"),
    validation: float = typer.Option(
        0.2, help="Share of each label held out to report accuracy (0: none); then fit on all"
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the held-out split and the classifier"),
    model: str | None = ModelOption,
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    column: str | None = ColumnOption,
) -> None:
    """Fit a classifier on embedded texts and save it (JSON + safetensors, no pickle)."""
    from distilmarco.apps.classify import fit_classifier, validate

    texts = _read(input, column)
    labels = _read_labels(input, label)
    encoder = _encoder(model, engine(backend, precision, device, batch_tokens))
    vectors = _embed(encoder, texts)
    metadata = {"model_id": encoder.model_id, "revision": encoder.revision or "", "label": label}
    if validation > 0:
        held = validate(vectors, labels, fraction=validation, seed=seed, method=method, k=k)
        if held is None:
            err.print("validation: no label has two texts, so none could be held out")
        else:
            err.print(
                f"validation accuracy {held.accuracy:.4f} on {held.held_out} held-out texts "
                f"(fitted on {held.fitted}); the saved classifier is fitted on all {len(texts)}"
            )
            metadata["validation_accuracy"] = f"{held.accuracy:.6f}"
    clf = fit_classifier(vectors, labels, method=method, k=k, seed=seed, metadata=metadata)
    clf.save(output)
    err.print(f"trained {method} on {len(texts)} texts, {len(clf.classes)} classes -> {output}")


@classify_app.command("predict", epilog="\b\nExample: distilmarco classify predict new.txt -c clf/")
def classify_predict(
    input: Path = typer.Argument(
        ..., help="Texts: lines, .jsonl, .csv/.tsv or .parquet (- reads stdin)"
    ),
    classifier: Path = typer.Option(..., "--classifier", "-c", help="Folder from `classify train`"),
    model: str | None = typer.Option(
        None, "--model", "-m", envvar=MODEL_ENV, help="Default: the training model"
    ),
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    column: str | None = ColumnOption,
    label: str | None = typer.Option(
        None,
        "--label-column",
        help="Gold labels, to report accuracy (default: the training label column, if present)",
    ),
    output: Path | None = OutputOption,
) -> None:
    """Label texts with a trained classifier (and report accuracy on labelled input)."""
    from distilmarco.apps.classify import Classifier

    _check_outputs(output)

    clf = Classifier.load(classifier)
    trained_on = clf.metadata.get("model_id")
    encoder = _encoder(model or trained_on, engine(backend, precision, device, batch_tokens))
    if trained_on and encoder.model_id != trained_on:
        err.print(f"warning: trained with {trained_on}, predicting with {encoder.model_id}")
    texts = _read(input, column)
    gold = _gold_labels(input, label, clf.metadata.get("label"))
    proba = clf.predict_proba(_embed(encoder, texts))
    rows = [
        {"row": i, "label": clf.classes[int(p.argmax())], "score": float(p.max()), "text": t}
        for i, (t, p) in enumerate(zip(texts, proba, strict=True))
    ]
    _emit(rows, output)
    if gold is not None:
        right = sum(str(r["label"]) == g for r, g in zip(rows, gold, strict=True))
        err.print(f"accuracy {right / len(rows):.4f} on {len(rows)} labelled texts")


def _gold_labels(path: Path, asked: str | None, trained: str | None) -> list[str] | None:
    """The gold labels of a table: the asked column, else the training label column when the
    table has it; None for plain text (or a table without it, unless asked for)."""
    from distilmarco.textio import is_table, read_texts

    if asked is not None:
        return _read_labels(path, asked)
    if trained is None or not is_table(path):
        return None
    try:
        return read_texts(path, trained, "--label-column")
    except InputError:
        return None


@classify_app.command(
    "zero-shot",
    epilog='\b\nExample: distilmarco classify zero-shot new.txt --label "refund=I want my money back" --label "card=my card"',
)
def classify_zero_shot(
    input: Path = typer.Argument(
        ..., help="Texts: lines, .jsonl, .csv/.tsv or .parquet (- reads stdin)"
    ),
    labels: list[str] = typer.Option(..., "--label", help="NAME or NAME=description (repeat)"),
    model: str | None = ModelOption,
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    column: str | None = ColumnOption,
    threshold: float | None = typer.Option(
        None, help="Least cosine to a label's description; below it a text gets --none-label"
    ),
    none_label: str = typer.Option("none", help="The label of texts that match none"),
    output: Path | None = OutputOption,
) -> None:
    """Label texts by similarity to label descriptions; no training data."""
    from distilmarco.apps.classify import zero_shot

    _check_outputs(output)

    names = [lab.split("=", 1)[0].strip() for lab in labels]
    descriptions = [lab.split("=", 1)[-1].strip() for lab in labels]
    if any(not n or not d for n, d in zip(names, descriptions, strict=True)):
        raise InputError("each --label needs a name (and, after '=', a description)")
    encoder = _encoder(model, engine(backend, precision, device, batch_tokens))
    texts = _read(input, column)
    result = zero_shot(
        _embed(encoder, texts),
        encoder.encode(descriptions),
        names,
        threshold=threshold,
        none_label=none_label,
    )
    proba = result.probabilities()
    rows = [
        {
            "row": i,
            "label": lab,
            "score": float(result.scores[i].max()),
            "probability": float(proba[i].max()),
            "text": t,
        }
        for i, (t, lab) in enumerate(zip(texts, result.labels, strict=True))
    ]
    _emit(rows, output)


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
    _check_outputs(None, ("--output", output))
    if label is not None and clusters is not None:
        raise InputError("colour by --label-column or by --clusters, not both")
    texts = _read(input, column)
    colour = _read_labels(input, label) if label is not None else None
    vectors = _embed(_encoder(model, engine(backend, precision, device, batch_tokens)), texts)
    if clusters is not None:
        colour = [f"cluster {c}" for c in kmeans(vectors, clusters, seed=seed).labels]
    coords = maps.project_2d(vectors, projection, seed=seed)
    if suffix == ".png":
        maps.write_png(output, coords, colour, width=width, height=height, title=title)
    else:
        maps.write_html(output, coords, texts, colour, title=title)
    err.print(f"wrote a map of {len(texts)} texts to {output}", highlight=False)
