"""The TensorFlow SavedModel (strings in, vectors out) and the ``tensorflow`` backend against our
torch fp32 vectors on real STS sentences, and its in-graph tokenisation against ours."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow_text", reason="needs the 'tensorflow' extra (tensorflow-text)")

from distilmarco import Encoder
from distilmarco.backends.tf_export import (
    MANIFEST,
    export_savedmodel,
    folder_is_valid,
    import_tf,
    savedmodel_path,
)
from distilmarco.backends.wordpiece import WordPieceSettings
from distilmarco.errors import BackendError
from distilmarco.model.st_format import SentenceModelSpec

STS_SENTENCES = 300
# Inputs where TensorFlow Text's own normalisation would differ from BertNormalizer's: they pass
# through our in-graph normaliser and must tokenise as ours do.
AWKWARD = [
    "Café déjà vu, naïve İstanbul",
    "ＡＢＣ full-width",
    "ﬁne ﬀ ligatures",
    "x² and ½",
    "straße",
    "ctrl\x00char\x07",
    "soft\u00adhyphen and \u200bzero width",
    "\u00a0no-break space",
    "ǅ title case",
    "中文字符 emoji 😀",
    "tab\tnew\nline",
]
# Where they still differ (listed in the README).
KNOWN_DIFFERENCES = ["[CLS] hello [SEP]", "ΣΣ"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def sts_sentences(sts_test: list[tuple[str, str, float]], n: int) -> list[str]:
    texts = [s for pair in sts_test for s in pair[:2]]
    return list(dict.fromkeys(texts))[:n]


def long_texts(sts_test: list[tuple[str, str, float]]) -> list[str]:
    """Texts far over 512 tokens (truncated to the limit) and one just under it."""
    words = " ".join(s for pair in sts_test[:400] for s in pair[:2]).split()
    return [" ".join(words[:2000]), " ".join(words[500:2500]), " ".join(words[:380])]


@pytest.fixture(scope="module")
def minilm_savedmodel(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sm") / "minilm"
    return export_savedmodel(SentenceModelSpec.from_folder(minilm_dir), out)


@pytest.mark.slow
def test_savedmodel_strings_in_matches_torch_on_sts(
    minilm_savedmodel: Path, minilm_encoder: Encoder, sts_test: list[tuple[str, str, float]]
) -> None:
    tf, _ = import_tf()
    loaded = tf.saved_model.load(str(minilm_savedmodel))
    texts = sts_sentences(sts_test, STS_SENTENCES)
    assert len(texts) == STS_SENTENCES
    out = loaded.signatures["serving_default"](texts=tf.constant(texts))
    vectors = out["sentence_embedding"].numpy()
    assert vectors.dtype == np.float32 and vectors.shape == (STS_SENTENCES, 384)
    reference = minilm_encoder.encode(texts)
    cos = cosines(vectors, reference)
    assert cos.min() >= 0.99999, (cos.argmin(), texts[int(cos.argmin())])
    # all-MiniLM-L6-v2 lists Normalize: the served vectors are unit length as ours are.
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_in_graph_tokenisation_equals_ours(
    minilm_savedmodel: Path, minilm_encoder: Encoder, sts_test: list[tuple[str, str, float]]
) -> None:
    tf, _ = import_tf()
    loaded = tf.saved_model.load(str(minilm_savedmodel))
    texts = sts_sentences(sts_test, STS_SENTENCES) + long_texts(sts_test) + AWKWARD
    texts += KNOWN_DIFFERENCES
    got = loaded.signatures["tokenize"](texts=tf.constant(texts))
    ids, mask = got["input_ids"].numpy(), got["attention_mask"].numpy().astype(bool)
    ours = minilm_encoder.tokenizer.encode(texts).ids
    assert ids.shape[1] == max(len(x) for x in ours) == minilm_encoder.max_seq_length
    same = [ids[i][mask[i]].tolist() == expected.tolist() for i, expected in enumerate(ours)]
    differ = [t for t, ok in zip(texts, same, strict=True) if not ok]
    assert differ == KNOWN_DIFFERENCES
    assert all(row[: row.sum()].all() for row in mask)  # right padding: real tokens first


@pytest.mark.slow
def test_tensorflow_backend_full_size_distilbert_with_512_tokens(
    make_model: Callable[..., Path],
    sts_test: list[tuple[str, str, float]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISTILMARCO_CACHE", str(tmp_path))
    folder = make_model("full-size-distilbert", full_size=True, max_seq_length=512, layout="st2")
    texts = sts_sentences(sts_test, STS_SENTENCES) + long_texts(sts_test)
    reference = Encoder(folder).encode(texts)
    backend = Encoder(folder, backend="tensorflow")
    assert backend.info.backend == "tensorflow"
    cos = cosines(backend.encode(texts), reference)
    assert cos.min() >= 0.99999, (cos.argmin(), cos.min())
    assert max(backend.tokenizer.encode(texts).lengths) == 512


@pytest.mark.slow
def test_savedmodel_cache_is_reused_and_rebuilt_when_damaged(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    spec = SentenceModelSpec.from_folder(tiny_model_dir)
    first = savedmodel_path(spec, tmp_path)
    assert folder_is_valid(first)
    stamp = (first / MANIFEST).stat().st_mtime_ns
    assert savedmodel_path(spec, tmp_path) == first
    assert (first / MANIFEST).stat().st_mtime_ns == stamp  # reused, not rebuilt
    (first / "saved_model.pb").write_bytes(b"damaged")
    assert not folder_is_valid(first)
    again = savedmodel_path(spec, tmp_path)
    assert again == first and folder_is_valid(again)
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def test_export_refuses_a_non_empty_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(BackendError, match="not an empty folder"):
        export_savedmodel(SentenceModelSpec.from_folder(tiny_model_dir), tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_tensorflow_backend_refuses_int8(tiny_model_dir: Path) -> None:
    from distilmarco.errors import InputError

    with pytest.raises(InputError, match=r"tensorflow backend.*fp32"):
        Encoder(tiny_model_dir, backend="tensorflow", precision="int8")


def test_wordpiece_settings_follow_the_model(minilm_dir: Path, tmp_path: Path) -> None:
    spec = SentenceModelSpec.from_folder(minilm_dir)
    s = WordPieceSettings.from_spec(spec)
    assert (len(s.vocab), s.lower_case, s.max_length) == (30522, True, 256)
    assert (s.cls_id, s.sep_id, s.pad_id, s.vocab[100]) == (101, 102, 0, "[UNK]")
    tok = json.loads((minilm_dir / "tokenizer.json").read_text())
    tok["model"]["type"] = "BPE"
    bad = tmp_path / "tokenizer.json"
    bad.write_text(json.dumps(tok))
    from distilmarco.backends.wordpiece import _from_tokenizer_json

    with pytest.raises(BackendError, match="BERT WordPiece only"):
        _from_tokenizer_json(bad)


def test_cli_export_savedmodel(tiny_model_dir: Path, tmp_path: Path) -> None:
    from distilmarco.cli import main

    out = tmp_path / "sm"
    assert (
        main(["export", "--format", "savedmodel", "-m", str(tiny_model_dir), "-o", str(out)]) == 0
    )
    tf, _ = import_tf()
    loaded = tf.saved_model.load(str(out))
    vec = loaded.signatures["serving_default"](texts=tf.constant(["a b c"]))["sentence_embedding"]
    ref = Encoder(tiny_model_dir).encode(["a b c"])
    assert cosines(vec.numpy(), ref).min() >= 0.99999
    assert main(["export", "--format", "onnx", "-m", str(tiny_model_dir), "-o", str(out)]) == 2
