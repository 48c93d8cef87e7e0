"""Command-line interface: thin commands that call the library and map its errors to exit codes."""

from __future__ import annotations

import logging
import sys

import typer

from distilmarco.cli import app_commands as _app_commands  # noqa: F401
from distilmarco.cli import classify as _classify  # noqa: F401
from distilmarco.cli import distill as _distill  # noqa: F401
from distilmarco.cli import embed as _embed  # noqa: F401  (registers commands)
from distilmarco.cli import eval_translation as _eval_translation  # noqa: F401
from distilmarco.cli import evaluate as _evaluate  # noqa: F401
from distilmarco.cli import export as _export  # noqa: F401
from distilmarco.cli import index as _index  # noqa: F401
from distilmarco.cli import rerank as _rerank  # noqa: F401
from distilmarco.cli import serve as _serve  # noqa: F401
from distilmarco.cli import train as _train  # noqa: F401
from distilmarco.cli.app import app, err, rewrite_aliases, styled
from distilmarco.cli.embed_ray import route as route_embed_verify
from distilmarco.errors import DistilmarcoError

__all__ = ["app", "main"]

log = logging.getLogger("distilmarco")
INTERNAL_ERROR = 70  # sysexits' EX_SOFTWARE: distinct from 1 (bad input) and 2 (usage)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI: our errors become one red line on stderr and exit code 1 (2 for usage);
    any other exception is logged with its traceback and exits with ``INTERNAL_ERROR``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args, notes = rewrite_aliases(sys.argv[1:] if argv is None else argv)
    args = route_embed_verify(args)
    for note in notes:
        err.print(note, highlight=False, markup=False)
    try:
        result = app(args=args, standalone_mode=False)
    except typer.exceptions.TyperException as exc:  # usage errors: bad option, bad value
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"error: {exc}", highlight=False, markup=False)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        return 130
    except (DistilmarcoError, OSError) as exc:  # bad input, or a file the system refused
        err.print(styled(("error:", "red"), f" {exc}"))
        return 1
    except UnicodeDecodeError as exc:  # a data file that is not UTF-8 text: bad input too
        err.print(styled(("error:", "red"), f" a file is not valid UTF-8 text: {exc}"))
        return 1
    except Exception:  # a fault in our code: never dressed up as bad input
        log.critical("internal error (a bug in distilmarco, please report it)", exc_info=True)
        return INTERNAL_ERROR
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
