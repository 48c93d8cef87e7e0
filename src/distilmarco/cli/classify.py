"""``distilmarco classify train | predict | zero-shot``: few-shot and zero-shot classification."""

from __future__ import annotations

from pathlib import Path

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
)
from distilmarco.cli.rows import (
    OutputOption,
    check_outputs,
    embed_texts,
    emit,
    read_labels,
    read_texts,
)
from distilmarco.errors import InputError

classify_app = typer.Typer(
    help="Few-shot and zero-shot text classification.",
    epilog="\b\nExample: distilmarco classify train labelled.csv --label-column category -o clf/",
    no_args_is_help=True,
)
app.add_typer(classify_app, name="classify")


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

    texts = read_texts(input, column)
    labels = read_labels(input, label)
    encoder = make_encoder(model, engine(backend, precision, device, batch_tokens))
    vectors = embed_texts(encoder, texts)
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

    check_outputs(output)

    clf = Classifier.load(classifier)
    trained_on = clf.metadata.get("model_id")
    encoder = make_encoder(model or trained_on, engine(backend, precision, device, batch_tokens))
    if trained_on and encoder.model_id != trained_on:
        err.print(f"warning: trained with {trained_on}, predicting with {encoder.model_id}")
    texts = read_texts(input, column)
    gold = _gold_labels(input, label, clf.metadata.get("label"))
    proba = clf.predict_proba(embed_texts(encoder, texts))
    rows = [
        {"row": i, "label": clf.classes[int(p.argmax())], "score": float(p.max()), "text": t}
        for i, (t, p) in enumerate(zip(texts, proba, strict=True))
    ]
    emit(rows, output)
    if gold is not None:
        right = sum(str(r["label"]) == g for r, g in zip(rows, gold, strict=True))
        err.print(f"accuracy {right / len(rows):.4f} on {len(rows)} labelled texts")


def _gold_labels(path: Path, asked: str | None, trained: str | None) -> list[str] | None:
    """The gold labels of a table: the asked column, else the training label column when the
    table has it; None for plain text (or a table without it, unless asked for)."""
    from distilmarco.textio import is_table, read_texts

    if asked is not None:
        return read_labels(path, asked)
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
    from distilmarco.apps.zero_shot import zero_shot

    check_outputs(output)

    names = [lab.split("=", 1)[0].strip() for lab in labels]
    descriptions = [lab.split("=", 1)[-1].strip() for lab in labels]
    if any(not n or not d for n, d in zip(names, descriptions, strict=True)):
        raise InputError("each --label needs a name (and, after '=', a description)")
    encoder = make_encoder(model, engine(backend, precision, device, batch_tokens))
    texts = read_texts(input, column)
    result = zero_shot(
        embed_texts(encoder, texts),
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
    emit(rows, output)
