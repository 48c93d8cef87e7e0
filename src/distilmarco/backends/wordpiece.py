"""The model's WordPiece settings (vocabulary, casing, special tokens) in a form an in-graph
tokenizer can be built from. Pure file reading: no TensorFlow needed here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilmarco.errors import BackendError, ModelFormatError
from distilmarco.model.st_format import SentenceModelSpec


@dataclass(frozen=True)
class WordPieceSettings:
    vocab: tuple[str, ...]  # token of each id, in id order
    lower_case: bool  # lower-case and strip accents (BERT's uncased normaliser)
    max_length: int  # tokens per text, [CLS] and [SEP] included
    max_chars_per_word: int
    cls_id: int
    sep_id: int
    pad_id: int
    unk_token: str

    @classmethod
    def from_spec(cls, spec: SentenceModelSpec) -> WordPieceSettings:
        folder = spec.transformer_folder
        tok_json = folder / "tokenizer.json"
        if tok_json.is_file():
            vocab, lower, max_chars, unk = _from_tokenizer_json(tok_json)
        else:
            vocab, lower, max_chars, unk = _from_vocab_txt(folder)
        ids = {token: i for i, token in enumerate(vocab)}
        missing = [t for t in ("[CLS]", "[SEP]", "[PAD]", unk) if t not in ids]
        if missing:
            raise ModelFormatError(f"the vocabulary in {folder} lacks {missing}")
        return cls(
            vocab=vocab,
            # Our tokenizer lower-cases the text itself when sentence_bert_config says so.
            lower_case=lower or spec.do_lower_case,
            max_length=spec.max_seq_length,
            max_chars_per_word=max_chars,
            cls_id=ids["[CLS]"],
            sep_id=ids["[SEP]"],
            pad_id=ids["[PAD]"],
            unk_token=unk,
        )


def _from_tokenizer_json(path: Path) -> tuple[tuple[str, ...], bool, int, str]:
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"could not read {path}: {exc}") from exc
    model = raw.get("model") or {}
    normalizer = raw.get("normalizer") or {}
    pre = raw.get("pre_tokenizer") or {}
    if model.get("type") != "WordPiece" or model.get("continuing_subword_prefix", "##") != "##":
        raise BackendError(
            f"{path} is not a BERT WordPiece tokenizer (model {model.get('type')!r}); "
            "in-graph tokenisation supports BERT WordPiece only"
        )
    if normalizer.get("type") != "BertNormalizer" or pre.get("type") != "BertPreTokenizer":
        raise BackendError(
            f"{path} uses normaliser {normalizer.get('type')!r} and pre-tokenizer "
            f"{pre.get('type')!r}; in-graph tokenisation supports BertNormalizer + BertPreTokenizer"
        )
    lower = bool(normalizer.get("lowercase", True))
    strip = normalizer.get("strip_accents")
    if strip is not None and bool(strip) != lower:
        raise BackendError(
            f"{path} sets lowercase={lower} but strip_accents={strip}: TensorFlow Text's BERT "
            "tokenizer does both or neither"
        )
    table: dict[str, int] = model.get("vocab") or {}
    vocab = [""] * len(table)
    for token, i in table.items():
        if not 0 <= i < len(vocab) or vocab[i]:
            raise ModelFormatError(f"{path} has a vocabulary whose ids are not 0..{len(vocab) - 1}")
        vocab[i] = token
    return (
        tuple(vocab),
        lower,
        int(model.get("max_input_chars_per_word", 100)),
        str(model.get("unk_token", "[UNK]")),
    )


def _from_vocab_txt(folder: Path) -> tuple[tuple[str, ...], bool, int, str]:
    vocab_file = folder / "vocab.txt"
    if not vocab_file.is_file():
        raise ModelFormatError(f"{folder} has neither tokenizer.json nor vocab.txt")
    lower = True
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            lower = bool(json.loads(cfg.read_text(encoding="utf-8")).get("do_lower_case", True))
        except json.JSONDecodeError as exc:
            raise ModelFormatError(f"{cfg} is not valid JSON: {exc}") from exc
    lines = vocab_file.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return tuple(line.rstrip("\r") for line in lines), lower, 100, "[UNK]"
