"""``distilmarco eval ir | sts | classify | cluster | msmarco``: quality figures, one command each.

Every command prints a table (with ``--json``, the report) on stdout, writes ``--report`` and
``--plot`` on request, and with ``--compare`` runs the same evaluation for several backends x
precisions, adding the difference from torch fp32 and the throughput to each row.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from distilmarco.cli.app import app, err, styled
from distilmarco.cli.eval_run import EvalOptions, run_eval, with_eval_options
from distilmarco.errors import InputError
from distilmarco.evaluation.compare import MetricKey, keyed

if TYPE_CHECKING:
    from distilmarco.cli.eval_run import Outcome
    from distilmarco.encoder import Encoder
    from distilmarco.evaluation.ir import Throughput

eval_app = typer.Typer(
    help="Evaluate the model: retrieval, STS, classification, clustering, MS MARCO reproduction.",
    epilog="\b\nExample: distilmarco eval sts ../shared/data/stsbenchmark",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")


def _throughput(spent: Throughput) -> dict[str, float]:
    return {"texts": spent.texts, "tokens": spent.tokens, "seconds": spent.seconds}


# --- eval ir -----------------------------------------------------------------------------------


@eval_app.command(
    "ir",
    epilog="\b\nExample: distilmarco eval ir ../shared/data/cranfield --mode dense,bm25,hybrid --report cran.json",
)
@with_eval_options
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
    rerank: str | None = typer.Option(
        None, "--rerank", help="Cross-encoder (Hub id or folder) re-scoring each mode's top hits"
    ),
    rerank_depth: int = typer.Option(
        100, "--rerank-depth", min=1, help="First-stage hits per query the cross-encoder re-scores"
    ),
    *,
    options: EvalOptions,
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

    def evaluate(encoder: Encoder) -> Outcome:
        results = evaluate_ir(
            encoder,
            dataset,
            modes=modes,
            k=k,
            metrics=metrics,
            relevance_level=relevance_level,
            batch_tokens=options.batch_tokens,
        )
        if rerank is not None:  # the MS MARCO re-ranking setting: first stage, then re-scored
            from distilmarco.evaluation.rerank import rerank_results
            from distilmarco.reranker import Reranker

            cross = Reranker(
                rerank, backend=options.backend, precision=options.precision, device=options.device
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
                if len(results) > 1 or options.compare is not None:
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
        several = len(results) > 1
        merged = {
            key: v
            for r in results
            for key, v in keyed(r.scores.mean, r.mode if several else "").items()
        }
        distinct = {id(r.throughput): r.throughput for r in results}  # bm25/hybrid share one index
        spent = sum(distinct.values(), Throughput())
        return merged, spent, {r.mode: report(r, per_query=per_query) for r in results}

    run_eval(f"ir {dataset.name}", options, evaluate)


def _with_candidates(dataset: Any, run: dict[str, dict[str, float]]) -> Any:
    from dataclasses import replace

    return replace(dataset, candidates=run)


# --- eval sts / classify / cluster -------------------------------------------------------------


@eval_app.command(
    "sts",
    epilog="\b\nExample: distilmarco eval sts ../shared/data/stsbenchmark --compare default --plot sts.png",
)
@with_eval_options
def sts(
    data: Path = typer.Argument(..., help="STS Benchmark file or folder (sts-test.csv), CSV/JSONL"),
    *,
    options: EvalOptions,
) -> None:
    """Spearman and Pearson correlation of the model's similarity with gold STS scores."""
    from distilmarco.evaluation.sts import evaluate_sts, read_pairs

    pairs = read_pairs(data)

    def evaluate(encoder: Encoder) -> Outcome:
        res = evaluate_sts(encoder, pairs, batch_tokens=options.batch_tokens)
        extra = {"pairs": res.pairs, "similarity": res.similarity, **_throughput(res.throughput)}
        return keyed(res.metrics), res.throughput, extra

    run_eval(f"sts {data.name}", options, evaluate)


@eval_app.command(
    "classify",
    epilog="\b\nExample: distilmarco eval classify ../shared/data/banking77 --label-column category",
)
@with_eval_options
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
    *,
    options: EvalOptions,
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

    def evaluate(encoder: Encoder) -> Outcome:
        res = evaluate_classification(
            encoder,
            train_rows,
            test_rows,
            experiments=experiments,
            samples_per_label=None if whole_train else samples_per_label,
            max_iter=max_iter,
            seed=seed,
            batch_tokens=options.batch_tokens,
        )
        return (
            keyed(res.metrics),
            res.throughput,
            {**asdict(res.report), **_throughput(res.throughput)},
        )

    run_eval(f"classify {data.name}", options, evaluate)


@eval_app.command(
    "cluster",
    epilog="\b\nExample: distilmarco eval cluster ../shared/data/banking77/test.csv --label-column category",
)
@with_eval_options
def cluster(
    data: Path = typer.Argument(..., help="CSV/TSV/JSONL with a text and a label column"),
    text_column: str = typer.Option("text", "--column", help="Column/field with the text"),
    label_column: str | None = typer.Option(
        None, help="Label column (default: label/category/...)"
    ),
    runs: int = typer.Option(5, help="k-means runs (seeds) to average"),
    seed: int = typer.Option(42, help="First k-means seed"),
    *,
    options: EvalOptions,
) -> None:
    """V-measure of k-means clusters (as many as labels) against the gold labels."""
    from distilmarco.evaluation.classify import read_labelled
    from distilmarco.evaluation.cluster import evaluate_clustering

    rows = read_labelled(data, text=text_column, label=label_column)

    def evaluate(encoder: Encoder) -> Outcome:
        res = evaluate_clustering(
            encoder, rows, runs=runs, seed=seed, batch_tokens=options.batch_tokens
        )
        extra = {"runs": list(res.runs), "clusters": res.clusters, "items": res.items}
        return keyed(res.metrics), res.throughput, {**extra, **_throughput(res.throughput)}

    run_eval(f"cluster {data.name}", options, evaluate)


# --- eval msmarco ------------------------------------------------------------------------------


@eval_app.command(
    "msmarco", epilog="\b\nExample: distilmarco eval msmarco ~/data/msmarco --device cuda"
)
@with_eval_options
def msmarco(
    data: Path = typer.Argument(..., help="Folder with the MS MARCO dev and/or TREC DL 2019 files"),
    dev_k: int = typer.Option(1000, help="Passages retrieved per dev query"),
    run_file: Path | None = typer.Option(
        None, "--run", help="Write TREC run files (one per benchmark)"
    ),
    *,
    options: EvalOptions,
) -> None:
    """Reproduce MS MARCO dev MRR@10 (33.79) and TREC DL 2019 nDCG@10 (70.24).

    See ``distilmarco.evaluation.msmarco`` for the files and the exact protocol."""
    from distilmarco.evaluation.ir import report, write_trec_run
    from distilmarco.evaluation.msmarco import MsmarcoFiles, reproduce

    files = MsmarcoFiles.in_folder(data)
    for name, found in (("MS MARCO dev", files.dev), ("TREC DL 2019", files.dl19)):
        if found is None:
            err.print(f"note: {name} files not found in {data}; skipped", highlight=False)

    def evaluate(encoder: Encoder) -> Outcome:
        found = reproduce(encoder, files, dev_k=dev_k, batch_tokens=options.batch_tokens)
        metrics: dict[MetricKey, float] = {}
        extra: dict[str, Any] = {}
        spent = None
        for rep in found:
            metrics[MetricKey(rep.benchmark, rep.metric)] = rep.value
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

    run_eval("msmarco", options, evaluate)
