"""Tokenising with the model's own ``tokenizers`` WordPiece, configured once and never per call."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from distilmarco.errors import ModelFormatError

# Characters kept per allowed token before tokenising. When a capped text still yields fewer
# tokens than the limit, the cap grows (x4) up to _MAX_CHARS_PER_TOKEN: the result equals
# tokenising the whole text except for texts whose words average over 1,000 characters (which
# WordPiece turns into [UNK] anyway), and the memory per text stays bounded.
_CHARS_PER_TOKEN = 24
_MAX_CHARS_PER_TOKEN = 1536


@dataclass(frozen=True)
class Tokenized:
    ids: list[np.ndarray]  # one int64 array per text, with [CLS] ... [SEP]
    truncated: np.ndarray  # bool, True where the text was longer than max_length tokens

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))


@dataclass(frozen=True)
class VocabularyFacts:
    size: int
    cased: bool
    non_ascii_share: float  # of the whole words (no ## pieces): accents, other scripts

    @property
    def english_only(self) -> bool:
        """An English vocabulary has almost no whole words outside ASCII (all-MiniLM-L6-v2's
        uncased vocabulary: 3 of 21,722); a multilingual one has many."""
        return self.non_ascii_share < 0.01

    def describe(self) -> str:
        kind = "cased" if self.cased else "uncased"
        if self.english_only:
            return (
                f"English-only ({kind} WordPiece, {self.size:,} tokens): other languages are cut "
                "into short pieces and match poorly"
            )
        return f"multilingual ({kind} WordPiece, {self.size:,} tokens)"


class Tokenizer:
    """Turns texts into token ids, truncated to ``max_length`` (special tokens included)."""

    def __init__(self, tokenizer: HFTokenizer, max_length: int, lowercase: bool = False) -> None:
        self.max_length = max_length
        self.lowercase = lowercase
        # Two private copies, each configured here once: the tokenizers object is shared across
        # threads, and reconfiguring it per call is not thread-safe.
        self._truncating = HFTokenizer.from_str(tokenizer.to_str())
        self._truncating.no_padding()
        self._truncating.enable_truncation(max_length)
        self._full = HFTokenizer.from_str(tokenizer.to_str())
        self._full.no_padding()
        self._full.no_truncation()
        self.pad_id = self._token_id("[PAD]", default=0)
        self.cls_id = self._token_id("[CLS]", default=101)
        self.sep_id = self._token_id("[SEP]", default=102)

    @classmethod
    def from_folder(cls, folder: Path, max_length: int, do_lower_case: bool) -> Tokenizer:
        """``tokenizer.json`` if present, else a BERT WordPiece built from ``vocab.txt``."""
        tok_json = folder / "tokenizer.json"
        if tok_json.is_file():
            try:
                tok = HFTokenizer.from_file(str(tok_json))
            except Exception as exc:  # tokenizers raises a bare Exception on bad files
                raise ModelFormatError(f"could not read {tok_json}: {exc}") from exc
            return cls(tok, max_length, do_lower_case)
        vocab = folder / "vocab.txt"
        if not vocab.is_file():
            raise ModelFormatError(f"{folder} has neither tokenizer.json nor vocab.txt")
        return cls(_wordpiece_from_vocab(folder), max_length, do_lower_case)

    def _token_id(self, token: str, default: int) -> int:
        found = self._full.token_to_id(token)
        return default if found is None else found

    def encode(self, texts: Sequence[str]) -> Tokenized:
        """Token ids for already validated strings."""
        if self.lowercase:
            texts = [t.lower() for t in texts]
        cap = self.max_length * _CHARS_PER_TOKEN
        capped = [t[:cap] for t in texts]
        encodings = self._truncating.encode_batch(capped)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        truncated = np.array([bool(e.overflowing) for e in encodings], dtype=bool)
        for i, text in enumerate(texts):
            if len(text) > cap:
                ids[i], truncated[i] = self._encode_long(text, cap)
        return Tokenized(ids=ids, truncated=truncated)

    def _encode_long(self, text: str, cap: int) -> tuple[np.ndarray, bool]:
        limit = self.max_length * _MAX_CHARS_PER_TOKEN
        while True:
            enc = self._truncating.encode(text[:cap])
            if len(enc.ids) >= self.max_length or cap >= min(len(text), limit):
                return np.asarray(enc.ids, dtype=np.int64), cap < len(text) or bool(enc.overflowing)
            cap *= 4

    def count(self, texts: Sequence[str]) -> list[int]:
        """Token counts without truncation (special tokens included)."""
        return [len(e.ids) for e in self._full.encode_batch(list(texts))]

    def words(self) -> list[str]:
        """The vocabulary's whole words (letters only: no word pieces, no special tokens),
        sorted."""
        return sorted(w for w in self._full.get_vocab() if w.isalpha() and len(w) > 1)

    def vocabulary(self) -> VocabularyFacts:
        """What the vocabulary says about the languages the model can read."""
        words = self.words()
        foreign = sum(1 for w in words if not w.isascii())
        return VocabularyFacts(
            size=self._full.get_vocab_size(),
            cased=any(w != w.lower() for w in words),
            non_ascii_share=foreign / max(len(words), 1),
        )

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of every token of ``text``, without special tokens or truncation."""
        if self.lowercase:
            text = text.lower()
        enc = self._full.encode(text, add_special_tokens=False)
        return list(enc.offsets)

    def encode_pairs(self, query: str, passages: Sequence[str]) -> TokenizedPairs:
        """``[CLS] query [SEP] passage [SEP]`` per passage, truncated ``longest_first`` to
        ``max_length`` (the longer side loses tokens first, so a long passage before a short
        query), with token types 0 for the query part and 1 for the passage part."""
        if self.lowercase:
            query, passages = query.lower(), [p.lower() for p in passages]
        cap = self.max_length * _CHARS_PER_TOKEN
        encodings = self._truncating.encode_batch([(query[:cap], p[:cap]) for p in passages])
        ids, types, truncated = [], [], []
        for passage, enc in zip(passages, encodings, strict=True):
            if len(query) > cap or len(passage) > cap:
                enc, cut = self._encode_long_pair(query, passage, cap)
            else:
                cut = False
            ids.append(np.asarray(enc.ids, dtype=np.int64))
            types.append(np.asarray(enc.type_ids, dtype=np.int64))
            truncated.append(bool(enc.overflowing) or cut)
        return TokenizedPairs(ids=ids, type_ids=types, truncated=np.array(truncated, dtype=bool))

    def _encode_long_pair(
        self, query: str, passage: str, cap: int
    ) -> tuple[Any, bool]:  # (tokenizers.Encoding, cut)
        """A pair with a side over the character cap: the cap grows until each capped side
        yields at least ``max_length`` tokens (then truncation keeps the same tokens as for the
        whole text) or holds the whole side. Also says whether a side was cut."""
        limit = self.max_length * _MAX_CHARS_PER_TOKEN
        while True:
            sides = [t[:cap] for t in (query, passage)]
            enough = all(
                len(s) == len(t)
                or len(self._full.encode(s, add_special_tokens=False).ids) >= self.max_length
                for s, t in zip(sides, (query, passage), strict=True)
            )
            if enough or cap >= limit:
                cut = cap < max(len(query), len(passage))
                return self._truncating.encode(sides[0], sides[1]), cut
            cap *= 4


def _wordpiece_from_vocab(folder: Path) -> HFTokenizer:
    """BERT's WordPiece pipeline with the checkpoint's own text handling from
    ``tokenizer_config.json``: ``do_lower_case`` (default true), ``strip_accents`` (default: the
    same as lower-casing) and ``tokenize_chinese_chars`` (CJK characters split apart, default
    true). Cased multilingual vocabularies set ``do_lower_case`` false and keep accents."""
    settings = _vocab_settings(folder / "tokenizer_config.json")
    tok = HFTokenizer(WordPiece.from_file(str(folder / "vocab.txt"), unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=settings.split_cjk,
        strip_accents=settings.strip_accents,
        lowercase=settings.lowercase,
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise ModelFormatError(f"{folder / 'vocab.txt'} lacks [CLS] or [SEP]")
    tok.post_processor = processors.BertProcessing(("[SEP]", sep_id), ("[CLS]", cls_id))
    tok.decoder = decoders.WordPiece()
    return tok


@dataclass(frozen=True)
class VocabSettings:
    lowercase: bool
    strip_accents: bool | None  # None: strip when lower-casing, as BERT does
    split_cjk: bool


def _vocab_settings(cfg: Path) -> VocabSettings:
    raw: dict[str, object] = {}
    if cfg.is_file():
        try:
            loaded = json.loads(cfg.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelFormatError(f"{cfg} is not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ModelFormatError(f"{cfg} must hold a JSON object")
        raw = loaded
    flags: dict[str, bool | None] = {}
    for key, default in (
        ("do_lower_case", True),
        ("strip_accents", None),
        ("tokenize_chinese_chars", True),
    ):
        value = raw.get(key, default)
        if value is not None and not isinstance(value, bool):
            raise ModelFormatError(f"{cfg}: {key} must be true, false or null, got {value!r}")
        flags[key] = value
    return VocabSettings(
        lowercase=bool(flags["do_lower_case"]),
        strip_accents=flags["strip_accents"],
        split_cjk=flags["tokenize_chinese_chars"] is not False,
    )


@dataclass(frozen=True)
class TokenizedPairs:
    ids: list[np.ndarray]  # one int64 array per pair: [CLS] query [SEP] passage [SEP]
    type_ids: list[np.ndarray]  # 0 for [CLS] query [SEP], 1 for passage [SEP]
    truncated: np.ndarray  # bool, True where the pair was longer than max_length tokens

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))
