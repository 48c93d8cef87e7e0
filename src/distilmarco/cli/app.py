"""The Typer application, the terminal consoles and the option vocabulary every command shares.

One name per concept across commands; older spellings are accepted for one release as hidden
aliases (``ALIASES``), rewritten before parsing with a note on stderr.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder
    from distilmarco.index.identity import Engine

# One name per concept, the same in every command (tests/test_cli_vocabulary.py checks them).
VOCABULARY: dict[str, tuple[str, ...]] = {
    "model (Hub id or folder; or DISTILMARCO_MODEL)": ("--model", "-m"),
    "output file": ("--output", "-o"),
    "index file": ("--index",),
    "text column or JSONL field": ("--column",),
    "id column": ("--id-column",),
    "label column": ("--label-column",),
    "number of results": ("--top-k", "-k"),
    "engine": ("--backend", "--precision", "--device", "--batch-tokens"),
    "seed": ("--seed",),
    "machine-readable output on stdout": ("--json",),
}

app = typer.Typer(
    name="distilmarco",
    help="Sentence embeddings with msmarco-distilbert-base-v4: embed, index, search, serve, "
    "evaluate.\n\nOptions mean the same in every command: "
    + "; ".join(f"{' '.join(names)} = {concept}" for concept, names in VOCABULARY.items())
    + ".",
    epilog="\b\nExample: distilmarco index add notes/ --index docs.db && distilmarco index search "
    '"how do planes fly?" --index docs.db',
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        import distilmarco

        out.print(f"distilmarco {distilmarco.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version"
    ),
) -> None:
    """Sentence embeddings with msmarco-distilbert-base-v4."""


# Markup off: user text (search hits, file names, errors) is printed as it is, never parsed for
# [style] tags; styled output is built from ``Text`` parts instead.
out = Console(soft_wrap=True, markup=False, highlight=False)  # results
err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)  # notices and errors

GROUPS = ("index", "classify", "eval")  # commands with subcommands

# Old spelling -> current one; the empty key applies to every command.
ALIASES: dict[tuple[str, ...], dict[str, str]] = {
    (): {
        "--field": "--column",
        "--text-column": "--column",
        "--id-field": "--id-column",
        "--db": "--index",
        "-d": "--index",
        "--top": "--top-k",
        "--label": "--label-column",
    },
    ("classify", "zero-shot"): {"--label": "--label"},  # here a label is a name=description
    ("classify", "train"): {"--k": "--neighbours"},
    ("cluster",): {"-k": "--clusters"},
    ("dedup",): {"--top-k": "--neighbours"},
    ("eval", "ir"): {"--k": "--top-k"},
}
REPORT_SUFFIX = ".json"  # ``eval ... --json PATH`` (old) writes a report: now ``--report PATH``


def command_path(argv: Sequence[str]) -> tuple[str, ...]:
    """The command (and subcommand) named by ``argv``."""
    if not argv or argv[0].startswith("-"):
        return ()
    if argv[0] in GROUPS and len(argv) > 1 and not argv[1].startswith("-"):
        return (argv[0], argv[1])
    return (argv[0],)


def rewrite_aliases(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``argv`` with old option spellings replaced, and a note for each one replaced."""
    argv = [str(a) for a in argv]  # callers may pass paths
    path = command_path(argv)
    table = {**ALIASES[()], **ALIASES.get(path, {})}
    out_args, notes = list(argv[: len(path)]), []
    rest = list(argv[len(path) :])
    for i, arg in enumerate(rest):
        if arg == "--":
            out_args.extend(rest[i:])
            break
        name, eq, value = arg.partition("=")
        new = table.get(name)
        if path[:1] == ("eval",) and name == "--json" and _is_report_path(eq, value, rest, i):
            new = "--report"
        if new is not None and new != name:
            notes.append(f"note: {name} is now {new} (the old name goes away in a later release)")
            arg = new + eq + value
        out_args.append(arg)
    return out_args, notes


def _is_report_path(eq: str, value: str, rest: list[str], i: int) -> bool:
    if eq:
        return True
    following = rest[i + 1] if i + 1 < len(rest) else ""
    return following.lower().endswith(REPORT_SUFFIX)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Plain strings and (text, style) pairs, none of them read as markup."""
    return Text.assemble(*parts)


# --- shared options ------------------------------------------------------------------------

MODEL_ENV = "DISTILMARCO_MODEL"
ModelOption = typer.Option(
    None,
    "--model",
    "-m",
    envvar=MODEL_ENV,
    help="Hub id or local folder (default: msmarco-distilbert-base-v4)",
)
BackendOption = typer.Option(
    None,
    "--backend",
    help="auto, torch, onnx or openvino (default: auto, the fastest here; an index: as recorded)",
)
PrecisionOption = typer.Option(
    None,
    "--precision",
    help="fp32 (exact), int8, fp16 or bf16 (default: fp32; an index: as recorded)",
)
DeviceOption = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto")
BatchTokensOption = typer.Option(
    None, "--batch-tokens", help="Token budget per batch (default: the backend's best)"
)


def engine(
    backend: str | None, precision: str | None, device: str, batch_tokens: int | None
) -> Engine:
    """The engine options of a command, as the library takes them."""
    from distilmarco.index.identity import Engine

    return Engine(backend, precision, device, batch_tokens)


def make_encoder(model: str | None, how: Engine) -> Encoder:
    """An encoder for ``model`` (default: msmarco-distilbert-base-v4) on the engine ``how``."""
    from distilmarco.model.hub import DEFAULT_MODEL

    return how.encoder(model or DEFAULT_MODEL)


ColumnOption = typer.Option(
    None, "--column", help="Column (CSV, TSV, Parquet) or field (JSONL) holding the text [text]"
)
JsonFlag = typer.Option(False, "--json", help="Machine-readable output (JSON) on stdout")
