"""``distilmarco eval ir | sts | classify | cluster | msmarco``: quality figures, one command each.

Every command prints a table (with ``--json``, the report) on stdout, writes ``--report`` and
``--plot`` on request, and with ``--compare`` runs the same evaluation for several backends x
precisions, adding the difference from torch fp32 and the throughput to each row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.table import Table

from distilmarco.cli.app import (
    BatchTokensOption,
    DeviceOption,
    JsonFlag,
    ModelOption,
    app,
    err,
    out,
    styled,
)
from distilmarco.errors import InputError

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder
    from distilmarco.evaluation.ir import Throughput

eval_app = typer.Typer(
    help="Evaluate the model: retrieval, STS, classification, clustering, MS MARCO reproduction.",
    epilog="\b\nExample: distilmarco eval sts ../shared/data/stsbenchmark",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")

BackendOption = typer.Option("auto", help="auto (the fastest here), torch, onnx or openvino")
PrecisionOption = typer.Option("fp32", help="fp32 (exact), int8, fp16 or bf16")
CompareOption = typer.Option(
    None,
    "--compare",
    help="Run for several backend:precision pairs ('all', 'default' or e.g. "
    "'torch:fp32,onnx:int8'); prints metric, delta vs torch fp32 and throughput",
)
ReportOption = typer.Option(None, "--report", help="Write the full report as JSON here")
PlotOption = typer.Option(None, "--plot", help="Write a bar chart (.png) of the main metric")


# --- shared plumbing -----------------------------------------------------------------------


def _model(model: str | None) -> str:
    from distilmarco.model.hub import DEFAULT_MODEL

    return model or DEFAULT_MODEL


def _run(
    *,
    task: str,
    model: str | None,
    backend: str,
    precision: str,
    device: str,
    compare: str | None,
    evaluate: Callable[[Encoder], tuple[dict[str, float], Throughput, dict[str, Any]]],
    json_path: Path | None,
    plot_path: Path | None,
    as_json: bool = False,
) -> None:
    """Evaluate once (or per combination with ``--compare``), print, and write JSON/PNG."""
    from distilmarco.encoder import Encoder
    from distilmarco.evaluation import compare as cmp

    name = _model(model)
    details: dict[str, dict[str, Any]] = {}

    def make(b: str, p: str) -> Encoder:
        return Encoder(name, backend=b, precision=p, device=device)

    def run(encoder: object) -> tuple[dict[str, float], Throughput]:
        assert isinstance(encoder, Encoder)
        metrics, spent, extra = evaluate(encoder)
        details[f"{encoder.backend.name}/{encoder.backend.precision}"] = extra
        return metrics, spent

    combos = cmp.parse_combos(compare) if compare is not None else (cmp.Combo(backend, precision),)
    if compare is None:
        encoder = make(backend, precision)
        metrics, spent = run(encoder)
        ran = cmp.Combo(encoder.backend.name, encoder.backend.precision)  # what auto chose
        rows = [cmp.CompareRow(ran, metrics, spent)]
    else:
        rows = cmp.compare(combos, make, run)
    records = cmp.as_records(rows)
    report = {"task": task, "model": name, "device": device, "rows": records, "details": details}
    if as_json:
        out.print_json(json.dumps(report, default=str))
    else:
        _print_table(task, name, records, with_delta=compare is not None)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        err.print(f"wrote {json_path}")
    if plot_path is not None:
        _plot(plot_path, task, records)
    if not any(r.ok for r in rows):
        raise InputError(f"no backend/precision could run: {rows[0].error}")


def _print_table(task: str, model: str, records: list[dict[str, Any]], *, with_delta: bool) -> None:
    """One row per combination (and per group, for metrics named ``"group metric"``)."""
    groups = list(dict.fromkeys(_split(n)[0] for r in records for n in r["metrics"]))
    names = list(dict.fromkeys(_split(n)[1] for r in records for n in r["metrics"]))
    table = Table(title=f"{task} · {model}", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("backend")
    if groups != [""]:
        table.add_column("mode")
    for n in names:
        table.add_column(n, justify="right")
        if with_delta:
            table.add_column("Δ", justify="right")
    table.add_column("texts/s", justify="right")
    table.add_column("tokens/s", justify="right")
    for r in records:
        label = f"{r['backend']}/{r['precision']}"
        for group in groups:
            lead = [label] if groups == [""] else [label, group or "-"]
            if r["error"]:
                blanks = ["-"] * (len(names) * (2 if with_delta else 1) + 2)
                table.add_row(*lead, *blanks)
                break
            cells = []
            for n in names:
                key = f"{group} {n}" if group else n
                value = r["metrics"].get(key)
                cells.append("-" if value is None else f"{value:.4f}")
                if with_delta:
                    d = r["delta_vs_torch_fp32"].get(key)
                    cells.append("-" if d is None else f"{d:+.4f}")
            speed = [f"{r['texts_per_second']:,.0f}", f"{r['tokens_per_second']:,.0f}"]
            table.add_row(*lead, *cells, *speed)
    out.print(table)
    for r in records:
        if r["error"]:
            err.print(
                f"{r['backend']}/{r['precision']}: {r['error']}", highlight=False, markup=False
            )


def _split(name: str) -> tuple[str, str]:
    group, _, metric = name.rpartition(" ")
    return group, metric


def _plot(path: Path, task: str, records: list[dict[str, Any]]) -> None:
    from distilmarco.evaluation.plots import bar_chart

    values, speed, metric = plot_values(records)
    if not values:
        return
    bar_chart(
        path,
        values,
        title=f"{task}: {metric}",
        ylabel=metric,
        secondary=speed if len(speed) > 1 else None,
        secondary_label="texts/s",
    )
    err.print(f"wrote {path}")


def plot_values(
    records: list[dict[str, Any]],
) -> tuple[dict[str, float], dict[str, float], str]:
    """The main metric (the first one reported) per backend and per mode, as bars, the throughput
    per bar, and the metric's name; one bar per mode when several modes ran."""
    ok = [r for r in records if not r["error"]]
    if not ok:
        return {}, {}, ""
    metric = _split(next(iter(ok[0]["metrics"])))[1]
    values: dict[str, float] = {}
    speed: dict[str, float] = {}
    for r in ok:
        engine = f"{r['backend']}/{r['precision']}"
        for name, value in r["metrics"].items():
            group, metric_name = _split(name)
            if metric_name == metric:
                label = f"{engine} {group}" if group else engine
                values[label] = value
                speed[label] = r["texts_per_second"]
    return values, speed, metric


def _throughput(spent: Throughput) -> dict[str, float]:
    return {"texts": spent.texts, "tokens": spent.tokens, "seconds": spent.seconds}


# --- eval ir -----------------------------------------------------------------------------------


@eval_app.command(
    "ir",
    epilog="\b\nExample: distilmarco eval ir ../shared/data/cranfield --mode dense,bm25,hybrid --report cran.json",
)
def ir(
    data: Path | None = typer.Argument(None, help="BEIR folder or SMART Cranfield folder"),
    collection: Path | None = typer.Option(None, help="MS MARCO collection.tsv (pid<TAB>text)"),
    queries: Path | None = typer.Option(None, help="Queries TSV (qid<TAB>text)"),
    qrels: Path | None = typer.Option(None, help="Qrels in TREC format"),
    candidates: Path | None = typer.Option(
        None, help="Candidate run to re-rank (TREC run, MS MARCO run or top-1000 TSV)"
    ),
    split: str = typer.Option("test", help="BEIR qrels split"),
    mode: str = typer.Option(
        None,
        help="dense, bm25, hybrid, rerank; comma-separated for several (default: dense, "
        "or rerank with --candidates)",
    ),
    k: int = typer.Option(100, "-k", "--top-k", help="Documents retrieved per query"),
    metrics: str = typer.Option("nDCG@10,MRR@10,Recall@100,MAP,P@10", help="Comma-separated"),
    relevance_level: int = typer.Option(
        1, help="Lowest judgement counted relevant (binary metrics)"
    ),
    run_file: Path | None = typer.Option(None, "--run", help="Write the TREC run file here"),
    per_query: bool = typer.Option(False, help="Put per-query values into the JSON report"),
    strict: bool = typer.Option(False, help="Fail on data problems instead of reporting them"),
    model: str | None = ModelOption,
    backend: str = BackendOption,
    precision: str = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    compare: str | None = CompareOption,
    json_path: Path | None = ReportOption,
    as_json: bool = JsonFlag,
    plot: Path | None = PlotOption,
    rerank: str | None = typer.Option(
        None, "--rerank", help="Cross-encoder (Hub id or folder) re-scoring each mode's top hits"
    ),
    rerank_depth: int = typer.Option(
        100, "--rerank-depth", min=1, help="First-stage hits per query the cross-encoder re-scores"
    ),
) -> None:
    """Retrieval quality (nDCG, MRR, Recall, MAP, P) on BEIR, MS MARCO/TREC or Cranfield data."""
    from distilmarco.evaluation import formats
    from distilmarco.evaluation.ir import Throughput, evaluate_ir, report, write_trec_run

    if data is not None:
        dataset = formats.load(data, split=split)
        if candidates is not None:
            dataset = _with_candidates(dataset, formats.read_run(candidates))
    elif queries is not None and qrels is not None:
        dataset = formats.read_msmarco(collection, queries, qrels, candidates=candidates)
    else:
        raise typer.BadParameter(
            "give a dataset folder, or --queries and --qrels (and --collection)"
        )
    modes = tuple(m.strip() for m in (mode or ("rerank" if candidates else "dense")).split(","))
    problems = formats.check(dataset).warnings()
    for line in problems:
        err.print(styled(("warning:", "yellow"), f" {dataset.name}: {line}"))
    if strict and problems:
        raise InputError(f"{dataset.name}: {problems[0]} (--strict)")
    for note in dataset.notes:
        err.print(f"note: {note}", highlight=False)

    def evaluate(encoder: Encoder) -> tuple[dict[str, float], Throughput, dict[str, Any]]:
        results = evaluate_ir(
            encoder,
            dataset,
            modes=modes,
            k=k,
            metrics=metrics,
            relevance_level=relevance_level,
            batch_tokens=batch_tokens,
        )
        if rerank is not None:  # the MS MARCO re-ranking setting: first stage, then re-scored
            from distilmarco.evaluation.rerank import rerank_results
            from distilmarco.reranker import Reranker

            cross = Reranker(
                rerank, backend=backend or "auto", precision=precision or "fp32", device=device
            )
            results += rerank_results(
                cross,
                dataset,
                results,
                depth=rerank_depth,
                metrics=metrics,
                relevance_level=relevance_level,
            )
        tag = f"{encoder.backend.name}-{encoder.backend.precision}"
        for res in results:
            if run_file is not None:
                path = run_file
                if len(results) > 1 or compare is not None:
                    path = run_file.with_name(f"{run_file.stem}.{res.mode}.{tag}{run_file.suffix}")
                write_trec_run(path, res.run, f"distilmarco-{res.mode}-{tag}")
                err.print(f"wrote {path}")
            cov = res.scores.coverage
            err.print(
                f"{res.mode}: {cov.scored} queries scored; {len(cov.not_retrieved)} judged but not "
                f"retrieved (score 0); {len(cov.unjudged)} without judgements and "
                f"{len(cov.no_relevant)} with no relevant judgement (not averaged)",
                highlight=False,
            )
        prefix = len(results) > 1
        merged = {
            (f"{r.mode} {n}" if prefix else n): v for r in results for n, v in r.scores.mean.items()
        }
        distinct = {id(r.throughput): r.throughput for r in results}  # bm25/hybrid share one index
        spent = sum(distinct.values(), Throughput())
        return merged, spent, {r.mode: report(r, per_query=per_query) for r in results}

    _run(
        task=f"ir {dataset.name}",
        model=model,
        backend=backend,
        precision=precision,
        device=device,
        compare=compare,
        evaluate=evaluate,
        json_path=json_path,
        as_json=as_json,
        plot_path=plot,
    )


def _with_candidates(dataset: Any, run: dict[str, dict[str, float]]) -> Any:
    from dataclasses import replace

    return replace(dataset, candidates=run)


# --- eval sts / classify / cluster -------------------------------------------------------------


@eval_app.command(
    "sts",
    epilog="\b\nExample: distilmarco eval sts ../shared/data/stsbenchmark --compare default --plot sts.png",
)
def sts(
    data: Path = typer.Argument(..., help="STS Benchmark file or folder (sts-test.csv), CSV/JSONL"),
    model: str | None = ModelOption,
    backend: str = BackendOption,
    precision: str = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    compare: str | None = CompareOption,
    json_path: Path | None = ReportOption,
    as_json: bool = JsonFlag,
    plot: Path | None = PlotOption,
) -> None:
    """Spearman and Pearson correlation of the model's similarity with gold STS scores."""
    from distilmarco.evaluation.sts import evaluate_sts, read_pairs

    pairs = read_pairs(data)

    def evaluate(encoder: Encoder) -> tuple[dict[str, float], Throughput, dict[str, Any]]:
        res = evaluate_sts(encoder, pairs, batch_tokens=batch_tokens)
        extra = {"pairs": res.pairs, "similarity": res.similarity, **_throughput(res.throughput)}
        return res.metrics, res.throughput, extra

    _run(
        task=f"sts {data.name}",
        model=model,
        backend=backend,
        precision=precision,
        device=device,
        compare=compare,
        evaluate=evaluate,
        json_path=json_path,
        as_json=as_json,
        plot_path=plot,
    )


@eval_app.command(
    "classify",
    epilog="\b\nExample: distilmarco eval classify ../shared/data/banking77 --label-column category",
)
def classify(
    data: Path = typer.Argument(..., help="Folder with train.csv and test.csv (or .tsv/.jsonl)"),
    train: Path | None = typer.Option(None, help="Train file (default: DATA/train.csv)"),
    test: Path | None = typer.Option(None, help="Test file (default: DATA/test.csv)"),
    text_column: str = typer.Option("text", "--column", help="Column/field with the text"),
    label_column: str | None = typer.Option(
        None, help="Label column (default: label/category/...)"
    ),
    experiments: int = typer.Option(10, help="Experiments to average (MTEB: 10)"),
    samples_per_label: int = typer.Option(8, help="Train rows per label per experiment (MTEB: 8)"),
    whole_train: bool = typer.Option(False, help="Fit once on the whole train set instead"),
    max_iter: int = typer.Option(100, help="LogisticRegression max_iter (MTEB: 100)"),
    seed: int = typer.Option(42, help="Seed of the undersampling and the classifier"),
    model: str | None = ModelOption,
    backend: str = BackendOption,
    precision: str = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    compare: str | None = CompareOption,
    json_path: Path | None = ReportOption,
    as_json: bool = JsonFlag,
    plot: Path | None = PlotOption,
) -> None:
    """Classification accuracy by the MTEB protocol (or fitted on the whole train set)."""
    from dataclasses import asdict

    from distilmarco.evaluation.classify import (
        evaluate_classification,
        read_labelled,
        train_test_paths,
    )

    train_path, test_path = train_test_paths(data, train, test)
    train_rows = read_labelled(train_path, text=text_column, label=label_column)
    test_rows = read_labelled(test_path, text=text_column, label=label_column)

    def evaluate(encoder: Encoder) -> tuple[dict[str, float], Throughput, dict[str, Any]]:
        res = evaluate_classification(
            encoder,
            train_rows,
            test_rows,
            experiments=experiments,
            samples_per_label=None if whole_train else samples_per_label,
            max_iter=max_iter,
            seed=seed,
            batch_tokens=batch_tokens,
        )
        return res.metrics, res.throughput, {**asdict(res.report), **_throughput(res.throughput)}

    _run(
        task=f"classify {data.name}",
        model=model,
        backend=backend,
        precision=precision,
        device=device,
        compare=compare,
        evaluate=evaluate,
        json_path=json_path,
        as_json=as_json,
        plot_path=plot,
    )


@eval_app.command(
    "cluster",
    epilog="\b\nExample: distilmarco eval cluster ../shared/data/banking77/test.csv --label-column category",
)
def cluster(
    data: Path = typer.Argument(..., help="CSV/TSV/JSONL with a text and a label column"),
    text_column: str = typer.Option("text", "--column", help="Column/field with the text"),
    label_column: str | None = typer.Option(
        None, help="Label column (default: label/category/...)"
    ),
    runs: int = typer.Option(5, help="k-means runs (seeds) to average"),
    seed: int = typer.Option(42, help="First k-means seed"),
    model: str | None = ModelOption,
    backend: str = BackendOption,
    precision: str = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    compare: str | None = CompareOption,
    json_path: Path | None = ReportOption,
    as_json: bool = JsonFlag,
    plot: Path | None = PlotOption,
) -> None:
    """V-measure of k-means clusters (as many as labels) against the gold labels."""
    from distilmarco.evaluation.classify import read_labelled
    from distilmarco.evaluation.cluster import evaluate_clustering

    rows = read_labelled(data, text=text_column, label=label_column)

    def evaluate(encoder: Encoder) -> tuple[dict[str, float], Throughput, dict[str, Any]]:
        res = evaluate_clustering(encoder, rows, runs=runs, seed=seed, batch_tokens=batch_tokens)
        extra = {"runs": list(res.runs), "clusters": res.clusters, "items": res.items}
        return res.metrics, res.throughput, {**extra, **_throughput(res.throughput)}

    _run(
        task=f"cluster {data.name}",
        model=model,
        backend=backend,
        precision=precision,
        device=device,
        compare=compare,
        evaluate=evaluate,
        json_path=json_path,
        as_json=as_json,
        plot_path=plot,
    )


# --- eval msmarco ------------------------------------------------------------------------------


@eval_app.command(
    "msmarco", epilog="\b\nExample: distilmarco eval msmarco ~/data/msmarco --device cuda"
)
def msmarco(
    data: Path = typer.Argument(..., help="Folder with the MS MARCO dev and/or TREC DL 2019 files"),
    dev_k: int = typer.Option(1000, help="Passages retrieved per dev query"),
    run_file: Path | None = typer.Option(
        None, "--run", help="Write TREC run files (one per benchmark)"
    ),
    model: str | None = ModelOption,
    backend: str = BackendOption,
    precision: str = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    compare: str | None = CompareOption,
    json_path: Path | None = ReportOption,
    as_json: bool = JsonFlag,
    plot: Path | None = PlotOption,
) -> None:
    """Reproduce MS MARCO dev MRR@10 (33.79) and TREC DL 2019 nDCG@10 (70.24).

    See ``distilmarco.evaluation.msmarco`` for the files and the exact protocol."""
    from distilmarco.evaluation.ir import report, write_trec_run
    from distilmarco.evaluation.msmarco import MsmarcoFiles, reproduce

    files = MsmarcoFiles.in_folder(data)
    for name, found in (("MS MARCO dev", files.dev), ("TREC DL 2019", files.dl19)):
        if found is None:
            err.print(f"note: {name} files not found in {data}; skipped", highlight=False)

    def evaluate(encoder: Encoder) -> tuple[dict[str, float], Throughput, dict[str, Any]]:
        found = reproduce(encoder, files, dev_k=dev_k, batch_tokens=batch_tokens)
        metrics, extra = {}, {}
        spent = None
        for rep in found:
            metrics[f"{rep.benchmark} {rep.metric}"] = rep.value
            extra[rep.benchmark] = {
                "metric": rep.metric,
                "value": rep.value,
                "published": rep.published,
                "delta": rep.delta,
                "report": report(rep.result),
            }
            err.print(
                f"{rep.benchmark}: {rep.metric} = {100 * rep.value:.2f} "
                f"(published {100 * rep.published:.2f}, {100 * rep.delta:+.2f})",
                highlight=False,
            )
            spent = rep.result.throughput if spent is None else spent + rep.result.throughput
            if run_file is not None:
                path = run_file.with_name(f"{run_file.stem}.{rep.benchmark}{run_file.suffix}")
                write_trec_run(path, rep.result.run, f"distilmarco-{rep.benchmark}")
                err.print(f"wrote {path}")
        assert spent is not None
        return metrics, spent, extra

    _run(
        task="msmarco",
        model=model,
        backend=backend,
        precision=precision,
        device=device,
        compare=compare,
        evaluate=evaluate,
        json_path=json_path,
        as_json=as_json,
        plot_path=plot,
    )
