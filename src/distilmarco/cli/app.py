"""The Typer application and the terminal consoles every command module shares."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="distilmarco",
    help="Sentence embeddings with msmarco-distilbert-base-v4: embed, index, search, serve, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console(soft_wrap=True)  # results
err = Console(stderr=True, soft_wrap=True)  # progress, notices and errors

ModelOption = typer.Option(
    None, "--model", "-m", help="Hub id or local folder (default: msmarco-distilbert-base-v4)"
)
