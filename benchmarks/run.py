"""Run every ``benchmarks/bench_<name>.py`` and join their markdown into ``results/README.md``.

python -m benchmarks.run                 # everything, full size
python -m benchmarks.run --quick         # a 1-2 minute smoke run of each
python -m benchmarks.run --only encode   # one benchmark (repeatable)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import benchmarks

RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "bench_"


def discover() -> list[str]:
    """Names of the benchmark modules, ``bench_encode.py`` -> ``encode``, sorted."""
    names = [
        m.name.removeprefix(PREFIX)
        for m in pkgutil.iter_modules(benchmarks.__path__)
        if m.name.startswith(PREFIX)
    ]
    return sorted(names)


def run_one(name: str, out_dir: Path, quick: bool) -> float:
    """Import and run ``bench_<name>.main``; returns the seconds it took."""
    module = importlib.import_module(f"benchmarks.{PREFIX}{name}")
    start = time.perf_counter()
    module.main(out_dir, quick)
    return time.perf_counter() - start


def write_readme(out_dir: Path, names: Sequence[str], quick: bool) -> Path:
    """Join every ``<name>.md`` present in ``out_dir`` (all benchmarks, not only this run's)."""
    present = [n for n in discover() if (out_dir / f"{n}.md").is_file()]
    lines = [
        "# distilmarco benchmark results",
        "",
        f"Written by `python -m benchmarks.run` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()} / Python {platform.python_version()}"
        + (
            " (this run: `--quick`, smoke-test sizes; figures are indicative only)."
            if quick
            else "."
        ),
        f"Benchmarks run this time: {', '.join(names) or 'none'}. Sections below: {', '.join(present)}.",
        "",
    ]
    for n in present:
        lines += [(out_dir / f"{n}.md").read_text(encoding="utf-8").rstrip(), ""]
    path = out_dir / "README.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark")
    parser.add_argument("--quick", action="store_true", help="small smoke-test sizes (1-2 min)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder ({RESULTS})")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    available = discover()
    if args.list:
        print("\n".join(available))
        return 0
    chosen = args.only or available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        print(f"error: unknown benchmark(s) {unknown}; choose from {available}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    for name in chosen:
        print(f"== bench {name}{' (quick)' if args.quick else ''}", flush=True)
        try:
            seconds = run_one(name, args.out, args.quick)
        except Exception:  # one broken benchmark must not hide the others' results
            traceback.print_exc()
            failed.append(name)
            continue
        print(f"== bench {name}: done in {seconds:.1f} s", flush=True)
    readme = write_readme(args.out, chosen, args.quick)
    print(f"results: {readme}")
    if failed:
        print(f"error: benchmark(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
