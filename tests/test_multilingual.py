"""Multilingual siblings (distiluse-base-multilingual-cased shape): a cased WordPiece vocabulary of
119,547 tokens that keeps accents and splits CJK characters, DistilBERT, mean pooling and a tanh
Dense head. Tokens and vectors must equal sentence-transformers' on the same folder, in both
folder layouts, with tokenizer.json and with vocab.txt alone.

The vocabulary is synthetic (the real one cannot be downloaded here) but has the real size,
special-token ids and settings, and holds cased, accented, Cyrillic, Greek, Arabic, Devanagari,
Hangul and CJK tokens, so the text handling under test is the real one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import _to_st2

VOCAB_SIZE = 119_547
TEXTS = [
    "Die Katze schläft auf dem Sofa.",
    "die katze SCHLÄFT",
    "Café crème à Paris, naïve Ångström!",
    "Москва — столица России.",
    "Η Αθήνα είναι όμορφη.",
    "博物馆九点开门。",
    "東京は日本の首都です。",
    "서울은 한국의 수도입니다.",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Mój brat gra na pianinie, żółć.",
    "Straße STRASSE straße İstanbul",
]
WORDS = [
    "Die", "die", "Katze", "katze", "schläft", "schlaft", "auf", "dem", "Sofa", "Café", "cafe",
    "café", "crème", "creme", "à", "Paris", "naïve", "Ångström", "Москва", "столица", "России",
    "Η", "Αθήνα", "είναι", "όμορφη", "서울은", "한국의", "수도입니다", "مرحبا", "بالعالم",
    "नमस्ते", "दुनिया", "Mój", "brat", "gra", "na", "pianinie", "żółć", "Straße", "STRASSE",
    "straße", "İstanbul", "SCHLÄFT", "##s", "##e", "##n",
]  # fmt: skip


def _characters() -> list[str]:
    ranges = [
        (0x21, 0x7E),  # ASCII punctuation, digits, letters
        (0xC0, 0x17F),  # Latin-1 and Latin Extended-A letters (accents, Polish, Turkish)
        (0x370, 0x3FF),  # Greek
        (0x400, 0x4FF),  # Cyrillic
        (0x600, 0x6FF),  # Arabic
        (0x900, 0x97F),  # Devanagari
        (0x3040, 0x30FF),  # Hiragana and Katakana
        (0x4E00, 0x9FFF),  # CJK unified ideographs
        (0xAC00, 0xD7A3),  # Hangul syllables
        (0x2010, 0x2027),  # dashes and quotes
        (0x3000, 0x3003),  # CJK punctuation
    ]
    chars = [chr(c) for lo, hi in ranges for c in range(lo, hi + 1)]
    return [c for c in chars if c.isprintable() and not c.isspace()]


def write_vocab(path: Path) -> None:
    """The special tokens where bert-base-multilingual-cased has them, characters, their
    ``##`` forms and whole words, filled up to 119,547 entries with unused tokens."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)]
    tokens += ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = _characters()
    tokens += chars + ["##" + c for c in chars] + WORDS
    tokens = list(dict.fromkeys(tokens))
    tokens += [f"[unused{i}]" for i in range(100, 100 + VOCAB_SIZE - len(tokens))]
    assert len(tokens) == VOCAB_SIZE
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")


def build_multilingual(folder: Path, hidden: int, dense: int, *, tokenizer_json: bool) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    hf_dir = folder.parent / f"{folder.name}-hf"
    hf_dir.mkdir(parents=True)
    write_vocab(hf_dir / "vocab.txt")
    # The settings bert-base-multilingual-cased ships; transformers builds its tokenizer from them.
    settings = {
        "do_lower_case": False,
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        "tokenizer_class": "BertTokenizer",
        "model_max_length": 512,
    }
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    cfg = DistilBertConfig(
        vocab_size=VOCAB_SIZE,
        dim=hidden,
        n_layers=2,
        n_heads=max(1, hidden // 64) if hidden >= 64 else 4,
        hidden_dim=hidden * 2,
    )
    hf = DistilBertModel(cfg)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "layer_norm" in name or "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(hf_dir)
    modules = [
        models.Transformer(str(hf_dir), max_seq_length=128),
        models.Pooling(hidden, pooling_mode="mean"),
        models.Dense(hidden, dense, activation_function=torch.nn.Tanh()),
    ]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    if not tokenizer_json:  # the older form: vocab.txt and its settings only
        (folder / "tokenizer.json").unlink()
        for name in ("vocab.txt", "tokenizer_config.json"):
            shutil.copy(hf_dir / name, folder / name)
    shutil.rmtree(hf_dir)
    return folder


@pytest.fixture(scope="module")
def tiny_multilingual(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("multilingual")
    folders = {}
    for kind in ("json", "vocab"):
        base = build_multilingual(root / kind, 32, 16, tokenizer_json=kind == "json")
        folders[f"st6-{kind}"] = base
        st2 = root / f"st2-{kind}"
        shutil.copytree(base, st2)
        _to_st2(st2, 128)
        folders[f"st2-{kind}"] = st2
    return folders


def test_vocab_settings_are_the_checkpoints(tiny_multilingual: dict[str, Path]) -> None:
    from distilmarco.tokenizer import _vocab_settings

    settings = _vocab_settings(tiny_multilingual["st6-vocab"] / "tokenizer_config.json")
    assert (settings.lowercase, settings.strip_accents, settings.split_cjk) == (False, None, True)
    assert (
        json.loads((tiny_multilingual["st2-vocab"] / "sentence_bert_config.json").read_text())[
            "do_lower_case"
        ]
        is False
    )


@pytest.mark.parametrize("kind", ["json", "vocab"])
def test_cased_multilingual_tokens_equal_the_reference(
    tiny_multilingual: dict[str, Path], kind: str
) -> None:
    from sentence_transformers import SentenceTransformer

    from distilmarco import Encoder

    folder = tiny_multilingual[f"st6-{kind}"]
    ref = SentenceTransformer(str(folder), device="cpu").tokenizer
    ours = Encoder(folder).tokenizer
    got = ours.encode(TEXTS).ids
    for text, ids in zip(TEXTS, got, strict=True):
        assert ids.tolist() == ref(text)["input_ids"], text
    vocab = ref.get_vocab()
    ids = {t: ours.encode([t]).ids[0][1:-1].tolist() for t in ("Katze", "katze", "café", "cafe")}
    assert ids["Katze"] == [vocab["Katze"]] and ids["katze"] == [vocab["katze"]]  # case kept
    assert ids["café"] == [vocab["café"]] and ids["cafe"] != ids["café"]  # accents kept
    cjk = ours.encode(["博物馆"]).ids[0][1:-1].tolist()
    assert cjk == [vocab["博"], vocab["物"], vocab["馆"]]  # one token per CJK character
    unknown = sum(int((row == vocab["[UNK]"]).sum()) for row in got)
    assert unknown == 0  # every test word is in the vocabulary: nothing hides behind [UNK]


@pytest.mark.parametrize("name", ["st6-json", "st6-vocab", "st2-json", "st2-vocab"])
def test_distiluse_shape_vectors_equal_sentence_transformers(
    tiny_multilingual: dict[str, Path], name: str
) -> None:
    from sentence_transformers import SentenceTransformer

    from distilmarco import Encoder

    folder = tiny_multilingual[name]
    enc = Encoder(folder)
    assert enc.spec.transformer.vocab_size == VOCAB_SIZE and enc.dimension == 16
    ours = enc.encode(TEXTS)
    theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert float(np.abs(ours).max()) < 1.0  # the tanh head bounds every coordinate


@pytest.mark.slow
def test_full_distiluse_shape_768_to_512(tmp_path: Path) -> None:
    """The distiluse-base-multilingual-cased shape itself: 768-d DistilBERT over 119,547 tokens,
    mean pooling, Dense 768 -> 512 with tanh (2 layers instead of 6: depth does not change the
    code path)."""
    from sentence_transformers import SentenceTransformer

    from distilmarco import Encoder

    folder = build_multilingual(tmp_path / "distiluse", 768, 512, tokenizer_json=True)
    ours = Encoder(folder).encode(TEXTS)
    assert ours.shape == (len(TEXTS), 512)
    theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize(
    "settings",
    [
        {"do_lower_case": False, "strip_accents": True},
        {"do_lower_case": True, "strip_accents": False},
        {"do_lower_case": False, "tokenize_chinese_chars": False},
        {"do_lower_case": True},
    ],
    ids=["cased-strip", "lower-keep-accents", "no-cjk-split", "uncased-default"],
)
def test_vocab_txt_settings_follow_transformers(tmp_path: Path, settings: dict[str, bool]) -> None:
    """A folder with vocab.txt alone: every text-handling flag of tokenizer_config.json is
    honoured the way transformers builds the tokenizer from the same files."""
    from transformers import AutoTokenizer

    from distilmarco.tokenizer import Tokenizer

    write_vocab(tmp_path / "vocab.txt")
    config = {"tokenizer_class": "BertTokenizer", "model_max_length": 512, **settings}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    ref = AutoTokenizer.from_pretrained(str(tmp_path))
    ours = Tokenizer.from_folder(tmp_path, 128, do_lower_case=False)
    for text, ids in zip(TEXTS, ours.encode(TEXTS).ids, strict=True):
        assert ids.tolist() == ref(text)["input_ids"], text


def test_info_says_which_models_are_english_only(
    tiny_multilingual: dict[str, Path], minilm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from distilmarco import Encoder
    from distilmarco.cli import main

    english = Encoder(minilm_dir).info.languages
    assert english.startswith("English-only (uncased WordPiece, 30,522 tokens)")
    multi = Encoder(tiny_multilingual["st6-json"]).info.languages
    assert multi == "multilingual (cased WordPiece, 119,547 tokens)"
    assert main(["info", str(minilm_dir), "--backend", "torch"]) == 0
    assert "English-only" in capsys.readouterr().out
