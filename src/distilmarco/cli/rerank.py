"""``distilmarco rerank``: score passages for one query with a cross-encoder, best first."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from distilmarco.cli.app import (
    BatchTokensOption,
    ColumnOption,
    DeviceOption,
    JsonFlag,
    app,
    err,
    out,
    styled,
)

DEFAULT_RERANK_MODEL = "cross-encoder/ms-marco-MiniLM-L6-v2"
RERANK_MODEL_ENV = "DISTILMARCO_RERANK_MODEL"
_SHOWN_CHARS = 100


@app.command(
    epilog='\b\nExample: distilmarco rerank "how do planes fly?" passages.txt -k 5 '
    "-m cross-encoder/ms-marco-MiniLM-L6-v2"
)
def rerank(
    query: str = typer.Argument(..., help="The query"),
    input: Path = typer.Argument(
        ..., help="Passages: text lines, .jsonl, .csv/.tsv or .parquet; - reads standard input"
    ),
    model: str = typer.Option(
        DEFAULT_RERANK_MODEL,
        "--model",
        "-m",
        envvar=RERANK_MODEL_ENV,
        help="Cross-encoder: Hub id or local folder",
    ),
    column: str | None = ColumnOption,
    top_k: int | None = typer.Option(
        None, "--top-k", "-k", min=1, help="Number of results (default: every passage)"
    ),
    as_json: bool = JsonFlag,
    backend: str = typer.Option("auto", "--backend", help="auto, torch, onnx or openvino"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 (exact), int8, fp16 or bf16"),
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
) -> None:
    """Score every passage in INPUT against QUERY with a cross-encoder; print them best first."""
    from distilmarco.reranker import Reranker, ranking
    from distilmarco.textio import read_text_file

    found = read_text_file(input, column)
    if found.blank_lines:
        err.print(f"{input}: skipped {found.blank_lines} blank line(s)", highlight=False)
    passages = found.texts
    reranker = Reranker(
        model, backend=backend, precision=precision, device=device, batch_tokens=batch_tokens
    )
    if reranker.num_labels != 1:
        raise typer.BadParameter(
            f"{model} gives {reranker.num_labels} scores per pair; ranking needs one",
            param_hint="--model",
        )
    scores, stats = reranker.score_with_stats(query, passages, truncation="count")
    ranked = ranking(scores, top_k)
    if stats.truncated:
        err.print(
            f"{stats.truncated} (query, passage) pair(s) were truncated to "
            f"{reranker.max_seq_length} tokens"
        )
    if as_json:
        rows = [{"index": r.index, "score": r.score, "text": passages[r.index]} for r in ranked]
        out.print(json.dumps(rows, ensure_ascii=False))
        return
    for r in ranked:
        text = passages[r.index]
        shown = text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
        out.print(styled((f"{r.score:9.4f}", "bold"), f"  [{r.index}]  {shown}"))
