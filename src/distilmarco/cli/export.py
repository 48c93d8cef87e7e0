"""``distilmarco export``: the model as a TensorFlow SavedModel or a LiteRT (TFLite) file."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from distilmarco.cli.app import ModelOption, app, err
from distilmarco.model.hub import DEFAULT_MODEL

FORMATS = ("savedmodel", "tflite")


@app.command(epilog="\b\nExample: distilmarco export --format savedmodel -o exported/")
def export(
    output: Path = typer.Option(
        ..., "--output", "-o", help="SavedModel: a new folder; tflite: a .tflite file"
    ),
    format: str = typer.Option(..., "--format", help="savedmodel or tflite"),
    model: str | None = ModelOption,
    precision: str = typer.Option("fp32", help="fp32; tflite also int8 (dynamic range)"),
) -> None:
    """Write the model for TensorFlow (strings in, vectors out) or LiteRT."""
    from distilmarco.model.hub import resolve
    from distilmarco.model.st_format import SentenceModelSpec

    if format not in FORMATS:
        raise typer.BadParameter(f"{format!r} is not one of {FORMATS}", param_hint="--format")
    if format == "savedmodel" and precision != "fp32":
        raise typer.BadParameter("a SavedModel is fp32 only", param_hint="--precision")
    resolved = resolve(model or DEFAULT_MODEL)
    spec = SentenceModelSpec.from_folder(resolved.folder, name_hint=resolved.model_id)
    if format == "savedmodel":
        from distilmarco.backends.tf_export import export_savedmodel

        export_savedmodel(spec, output)
        err.print(f"wrote a SavedModel to {output} (signature serving_default: texts -> vectors)")
        return
    from distilmarco.backends.litert_export import litert_model

    if output.suffix != ".tflite":
        raise typer.BadParameter(f"{output} must end in .tflite", param_hint="-o")
    if output.exists():
        raise typer.BadParameter(f"{output} exists; choose a new file", param_hint="-o")
    output.parent.mkdir(parents=True, exist_ok=True)
    cached = litert_model(spec, precision)
    tmp = output.with_name(f".{output.name}.tmp")
    shutil.copyfile(cached, tmp)
    tmp.replace(output)
    err.print(f"wrote {precision} LiteRT model to {output}")
