"""Readers for the IR test-collection formats people keep: BEIR, MS MARCO / TREC, SMART (Cranfield).

Every reader returns an :class:`IRDataset`; every malformed line raises :class:`FormatError` naming
the file and the line. What is odd but readable (judgements of documents that are not in the corpus,
queries nobody judged) is kept and counted by :func:`check`, never dropped silently.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from distilmarco.errors import FormatError, InputError
from distilmarco.evaluation.lines import (
    existing_file,
    natural_key,
    parse_float,
    parse_int,
    split_lines,
)
from distilmarco.textio import jsonl_objects

log = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Document:
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """What gets embedded: the title, then the text (the BEIR convention)."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass(frozen=True)
class IRDataset:
    """A test collection: documents, queries, graded judgements, optional candidates to re-rank."""

    name: str
    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: Qrels
    candidates: Run | None = None  # a first-stage run: re-rank these instead of the whole corpus
    notes: tuple[str, ...] = field(default=())  # format-specific conversions, shown in reports


@dataclass(frozen=True)
class DataCheck:
    """What is inconsistent between the parts of a dataset (counts, plus a few example ids)."""

    documents: int
    queries: int
    judgements: int
    judged_queries: int
    unknown_documents: int  # judgements of documents not in the corpus
    unknown_document_examples: tuple[str, ...]
    unknown_queries: int  # judgements of queries with no text
    unknown_query_examples: tuple[str, ...]
    unjudged_queries: int  # queries with text and no judgement: not evaluated
    unjudged_query_examples: tuple[str, ...]

    def warnings(self) -> list[str]:
        out = []
        if self.unknown_documents:
            out.append(
                f"{self.unknown_documents} judgement(s) name documents not in the corpus "
                f"(e.g. {', '.join(self.unknown_document_examples)}); they stay in the "
                "denominators of recall and nDCG"
            )
        if self.unknown_queries:
            out.append(
                f"{self.unknown_queries} judged quer(y/ies) have no text "
                f"(e.g. {', '.join(self.unknown_query_examples)}); they score 0"
            )
        if self.unjudged_queries:
            out.append(
                f"{self.unjudged_queries} quer(y/ies) have no judgement "
                f"(e.g. {', '.join(self.unjudged_query_examples)}); they are not evaluated"
            )
        return out


def check(data: IRDataset) -> DataCheck:
    """Count judgements of unknown documents/queries and queries without judgements."""
    unknown_docs = sorted(
        {d for docs in data.qrels.values() for d in docs if d not in data.corpus}, key=natural_key
    )
    unknown_queries = sorted((q for q in data.qrels if q not in data.queries), key=natural_key)
    unjudged = sorted((q for q in data.queries if q not in data.qrels), key=natural_key)
    return DataCheck(
        documents=len(data.corpus),
        queries=len(data.queries),
        judgements=sum(len(d) for d in data.qrels.values()),
        judged_queries=len(data.qrels),
        unknown_documents=sum(
            1 for docs in data.qrels.values() for d in docs if d not in data.corpus
        ),
        unknown_document_examples=tuple(unknown_docs[:5]),
        unknown_queries=len(unknown_queries),
        unknown_query_examples=tuple(unknown_queries[:5]),
        unjudged_queries=len(unjudged),
        unjudged_query_examples=tuple(unjudged[:5]),
    )


# --- format detection -----------------------------------------------------------------------


def load(path: Path, *, split: str = "test") -> IRDataset:
    """Read a BEIR folder (``corpus.jsonl``) or a SMART Cranfield folder (``cran.all.1400``)."""
    if not path.exists():
        raise InputError(f"dataset {path} does not exist")
    if (path / "corpus.jsonl").is_file():
        return read_beir(path, split=split)
    if (path / "cran.all.1400").is_file():
        return read_cranfield(path)
    raise InputError(
        f"{path} is neither a BEIR folder (corpus.jsonl, queries.jsonl, qrels/{split}.tsv) nor a "
        "SMART Cranfield folder (cran.all.1400, cran.qry, cranqrel); for MS MARCO/TREC files "
        "pass --collection, --queries and --qrels"
    )


# --- BEIR -----------------------------------------------------------------------------------


def read_beir(folder: Path, *, split: str = "test") -> IRDataset:
    """``corpus.jsonl`` (_id, title, text), ``queries.jsonl`` (_id, text), ``qrels/<split>.tsv``."""
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        found = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise InputError(f"{qrels_path} does not exist; splits here: {found or 'none'}")
    corpus = {}
    for path, n, row in _jsonl(folder / "corpus.jsonl"):
        doc_id = _field(row, "_id", path, n)
        corpus[doc_id] = Document(str(row.get("title") or ""), _field(row, "text", path, n))
    queries = {
        _field(row, "_id", path, n): _field(row, "text", path, n)
        for path, n, row in _jsonl(folder / "queries.jsonl")
    }
    qrels = read_qrels(qrels_path)
    split_queries = {q: t for q, t in queries.items() if q in qrels}
    notes: tuple[str, ...] = ()
    if len(split_queries) < len(queries):
        notes = (
            f"{len(queries) - len(split_queries)} quer(y/ies) of queries.jsonl are not judged in "
            f"split {split!r} and are not evaluated",
        )
    return IRDataset(folder.name, corpus, split_queries, qrels, notes=notes)


def _jsonl(path: Path) -> Iterator[tuple[Path, int, dict[str, object]]]:
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    for n, row in jsonl_objects(path):
        yield path, n, row


def _field(row: dict[str, object], name: str, path: Path, n: int) -> str:
    value = row.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise FormatError(f"{path}:{n}: field {name!r} is missing or not a string")
    return value


# --- MS MARCO / TREC ------------------------------------------------------------------------


def read_qrels(path: Path) -> Qrels:
    """TREC qrels (``qid iter doc rel``, whitespace-separated) or BEIR's TSV with a header."""
    qrels: Qrels = {}
    beir = False
    for n, fields in split_lines(path):
        if n == 1 and fields[:2] == ["query-id", "corpus-id"]:
            beir = True
            continue
        if len(fields) == 4 and not beir:
            qid, _, doc, rel = fields
        elif len(fields) == 3 and beir:
            qid, doc, rel = fields
        else:
            shape = (
                "'query-id corpus-id score' (3 fields)"
                if beir
                else ("'query 0 document relevance' (4 fields)")
            )
            raise FormatError(f"{path}:{n}: expected {shape}, got {len(fields)} field(s)")
        qrels.setdefault(qid, {})[doc] = parse_int(rel, path, n, "relevance")
    return qrels


def read_run(path: Path) -> Run:
    """A run: TREC (``qid Q0 doc rank score tag``), MS MARCO (``qid pid rank``), or a top-1000
    TSV (``qid pid query passage``: rank = line order). Higher score = better."""
    run: Run = {}
    with open(existing_file(path), encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            tabbed = line.rstrip("\r\n").split("\t")
            if len(tabbed) == 4:  # top-1000: qid pid query passage
                docs = run.setdefault(tabbed[0], {})
                docs[tabbed[1]] = -float(len(docs) + 1)
                continue
            fields = line.split()
            if len(fields) == 6:
                qid, doc, score = fields[0], fields[2], parse_float(fields[4], path, n, "score")
            elif len(fields) == 3:
                qid, doc, score = fields[0], fields[1], -parse_float(fields[2], path, n, "rank")
            else:
                raise FormatError(
                    f"{path}:{n}: expected a TREC run line 'query Q0 document rank score tag' "
                    f"(6 fields), 'query document rank' (3) or a top-1000 TSV line "
                    f"(4 TAB-separated), got {len(fields)} field(s)"
                )
            run.setdefault(qid, {})[doc] = score
    return run


def read_top1000_texts(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Query and passage texts carried by a top-1000 TSV (``qid pid query passage``)."""
    queries: dict[str, str] = {}
    passages: dict[str, str] = {}
    with open(existing_file(path), encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 4:
                raise FormatError(
                    f"{path}:{n}: expected 'qid<TAB>pid<TAB>query<TAB>passage', "
                    f"got {len(fields)} field(s)"
                )
            queries[fields[0]] = fields[2]
            passages[fields[1]] = fields[3]
    return queries, passages


def read_id_texts(path: Path, what: str = "text") -> dict[str, str]:
    """``id<TAB>text`` lines (MS MARCO collection.tsv and queries.tsv)."""
    texts = {}
    with open(existing_file(path), encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 2 or not fields[0].strip():
                raise FormatError(
                    f"{path}:{n}: expected 'id<TAB>{what}', got {len(fields)} TAB-separated field(s)"
                )
            texts[fields[0].strip()] = fields[1]
    return texts


def read_msmarco(
    collection: Path | None,
    queries: Path,
    qrels: Path,
    *,
    candidates: Path | None = None,
    name: str = "msmarco",
) -> IRDataset:
    """MS MARCO / TREC DL files; with a top-1000 TSV as ``candidates`` the collection may be omitted."""
    query_texts = read_id_texts(queries, "query")
    corpus: dict[str, Document] = {}
    if collection is not None:
        corpus = {
            pid: Document("", text) for pid, text in read_id_texts(collection, "passage").items()
        }
    run = read_run(candidates) if candidates is not None else None
    if candidates is not None and _is_top1000(candidates):
        _, passages = read_top1000_texts(candidates)
        for pid, text in passages.items():
            corpus.setdefault(pid, Document("", text))
    if not corpus:
        raise InputError("no passages: give --collection, or a top-1000 TSV as --candidates")
    if run is not None:
        missing = sorted({d for docs in run.values() for d in docs if d not in corpus})
        if missing:
            raise InputError(
                f"{candidates}: {len(missing)} candidate passage(s) are not in the collection, "
                f"e.g. {', '.join(missing[:5])}"
            )
    return IRDataset(name, corpus, query_texts, read_qrels(qrels), candidates=run)


def _is_top1000(path: Path) -> bool:
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    return len(first.rstrip("\r\n").split("\t")) == 4


# --- SMART (Cranfield) ----------------------------------------------------------------------

_SMART_FIELD = re.compile(r"^\.([A-Z])(?:\s+(.*))?$")


def read_cranfield(folder: Path) -> IRDataset:
    """Cranfield 1400 in SMART format. Queries are renumbered 1..225 in file order (that is how
    ``cranqrel`` numbers them); gain = 5 - code, and code -1 (no relevance) becomes gain 0."""
    docs = {
        doc_id: Document(" ".join(f.get("T", "").split()), " ".join(f.get("W", "").split()))
        for doc_id, f in read_smart(folder / "cran.all.1400")
    }
    queries = {
        str(n): " ".join(f.get("W", "").split())
        for n, (_, f) in enumerate(read_smart(folder / "cran.qry"), start=1)
    }
    qrels: Qrels = {}
    path = folder / "cranqrel"
    for n, fields in split_lines(path):
        if len(fields) != 3:
            raise FormatError(
                f"{path}:{n}: expected 'query document code', got {len(fields)} field(s)"
            )
        code = parse_int(fields[2], path, n, "relevance code")
        if code not in (-1, 1, 2, 3, 4):
            raise FormatError(f"{path}:{n}: relevance code {code} is not one of -1, 1, 2, 3, 4")
        qrels.setdefault(fields[0], {})[fields[1]] = 0 if code == -1 else 5 - code
    notes = (
        "cran.qry .I numbers replaced by file order 1..N (the numbering of cranqrel)",
        "gain = 5 - code; code -1 counted as not relevant",
    )
    return IRDataset("cranfield", docs, queries, qrels, notes=notes)


def read_smart(path: Path) -> list[tuple[str, dict[str, str]]]:
    """Records of a SMART file: ``.I id`` opens a record, ``.X`` lines open field X."""
    records: list[tuple[str, dict[str, str]]] = []
    current: dict[str, list[str]] | None = None
    name = ""
    with open(existing_file(path), encoding="utf-8", errors="replace") as f:
        for n, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            match = _SMART_FIELD.match(line)
            if match and match.group(1) == "I":
                if not (match.group(2) or "").strip():
                    raise FormatError(f"{path}:{n}: '.I' without a record id")
                current = {}
                records.append((match.group(2).strip(), current))  # type: ignore[arg-type]
                name = ""
            elif match:
                if current is None:
                    raise FormatError(f"{path}:{n}: field .{match.group(1)} before the first .I")
                name = match.group(1)
                current.setdefault(name, []).append(match.group(2) or "")
            elif line.strip():
                if current is None or not name:
                    raise FormatError(f"{path}:{n}: text outside a field (expected .I or .W first)")
                current[name].append(line)
    return [(rid, {k: "\n".join(v) for k, v in f.items()}) for rid, f in records]


__all__ = [
    "DataCheck",
    "Document",
    "IRDataset",
    "check",
    "load",
    "read_beir",
    "read_cranfield",
    "read_id_texts",
    "read_msmarco",
    "read_qrels",
    "read_run",
    "read_smart",
    "read_top1000_texts",
]
