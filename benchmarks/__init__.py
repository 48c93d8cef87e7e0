"""Benchmarks for distilmarco, run by ``make bench`` (``python -m benchmarks.run``).

Contract: each ``benchmarks/bench_<name>.py`` exposes ``main(out_dir: Path, quick: bool) -> None``
that writes ``out_dir/<name>.json`` (machine-readable figures) and ``out_dir/<name>.md`` (a
markdown section with its tables). ``benchmarks.run`` discovers the modules, runs them in turn and
joins the markdown into ``out_dir/README.md``. Helpers shared by several benchmarks live in
``benchmarks/common.py``; benchmarks never import from ``tests``.
"""
