"""Text in, vectors out: validate -> tokenize -> length-sorted token-budget batches -> backend.

``Encoder.encode`` always returns a float32 array of shape (N, D) in input order.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from distilmarco.backends import Backend, create_backend
from distilmarco.batching import check_batch_tokens, non_finite_rows, pad_batch, plan_batches
from distilmarco.errors import BackendError, InputError, TruncationError
from distilmarco.model.hub import DEFAULT_MODEL, resolve
from distilmarco.model.st_format import SentenceModelSpec, Similarity
from distilmarco.tokenizer import Tokenizer
from distilmarco.vectors import normalize_rows

log = logging.getLogger(__name__)

Truncation = Literal["warn", "error", "count"]
_SURROGATE = re.compile("[\ud800-\udfff]")
# Texts tokenised at a time: bounds memory by this window, not by the number of inputs.
_WINDOW = 8192


@dataclass(frozen=True)
class EncodeStats:
    """What one ``encode`` call did: sizes, padding waste, truncations, time."""

    texts: int
    tokens: int  # real tokens, special tokens included
    padded_tokens: int  # tokens computed including padding
    truncated: int
    batches: int
    seconds: float

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0


@dataclass(frozen=True)
class EncoderInfo:
    model_id: str
    revision: str | None
    folder: str
    architecture: str
    layers: int
    hidden_size: int
    attention_heads: int
    dimension: int
    max_seq_length: int
    pooling: tuple[str, ...]
    heads: tuple[str, ...]
    normalized: bool
    similarity: Similarity
    layout: str
    backend: str
    precision: str
    device: str
    files: tuple[str, ...]
    languages: str = ""  # what the vocabulary can read, e.g. "English-only (uncased ...)"


class Encoder:
    """A sentence-embedding model ready to encode.

    >>> enc = Encoder("msmarco-distilbert-base-v4")          # doctest: +SKIP
    >>> enc.encode(["how do planes fly?"]).shape             # doctest: +SKIP
    (1, 768)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        backend: str = "torch",
        precision: str = "fp32",
        device: str = "cpu",
        max_seq_length: int | None = None,
        batch_tokens: int | None = None,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        calibration: Sequence[str] | None = None,
    ) -> None:
        """``calibration``: texts that set OpenVINO's static int8 scales (``precision="int8"``);
        a few hundred from the corpus to be encoded; by default, bundled prose."""
        resolved = resolve(model, revision=revision, cache_dir=cache_dir)
        self.model_id = resolved.model_id
        self.revision = resolved.revision
        self.spec = SentenceModelSpec.from_folder(resolved.folder, name_hint=resolved.model_id)
        limit = self.spec.max_seq_length
        if max_seq_length is not None and not 2 <= max_seq_length <= limit:
            raise InputError(f"max_seq_length {max_seq_length} must be between 2 and {limit}")
        self.max_seq_length = max_seq_length or limit
        self.tokenizer = Tokenizer.from_folder(
            self.spec.transformer_folder, self.max_seq_length, self.spec.do_lower_case
        )
        self.backend: Backend = create_backend(
            self.spec, backend, precision, device, threads=threads, calibration=calibration
        )
        # Default budget: the backend's preference (never below one full-length sequence).
        preferred = max(self.backend.batch_tokens, self.max_seq_length)
        self.batch_tokens = check_batch_tokens(batch_tokens or preferred, self.max_seq_length)

    # --- facts about the model -------------------------------------------------------------

    @property
    def dimension(self) -> int:
        return self.spec.dimension

    @property
    def similarity(self) -> Similarity:
        return self.spec.similarity

    @property
    def info(self) -> EncoderInfo:
        spec, tf = self.spec, self.spec.transformer
        return EncoderInfo(
            model_id=self.model_id,
            revision=self.revision,
            folder=str(spec.folder),
            architecture=tf.architecture,
            layers=tf.num_layers,
            hidden_size=tf.hidden_size,
            attention_heads=tf.num_heads,
            dimension=spec.dimension,
            max_seq_length=self.max_seq_length,
            pooling=spec.pooling.modes,
            heads=tuple(type(h).__name__.removesuffix("Spec") for h in spec.heads),
            normalized=spec.normalized,
            similarity=spec.similarity,
            layout=spec.layout,
            backend=self.backend.name,
            precision=self.backend.precision,
            device=self.backend.device,
            files=tuple(
                sorted(
                    str(p.relative_to(spec.folder)) for p in spec.folder.rglob("*") if p.is_file()
                )
            ),
            languages=self.tokenizer.vocabulary().describe(),
        )

    # --- encoding --------------------------------------------------------------------------

    def encode(
        self,
        texts: str | Iterable[str],
        *,
        normalize: bool = False,
        batch_tokens: int | None = None,
        truncation: Truncation = "warn",
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed ``texts``: float32 (N, D), row i for text i. A single string gives (1, D)."""
        vectors, _ = self.encode_with_stats(
            texts,
            normalize=normalize,
            batch_tokens=batch_tokens,
            truncation=truncation,
            show_progress=show_progress,
        )
        return vectors

    def encode_with_stats(
        self,
        texts: str | Iterable[str],
        *,
        normalize: bool = False,
        batch_tokens: int | None = None,
        truncation: Truncation = "warn",
        show_progress: bool = False,
    ) -> tuple[np.ndarray, EncodeStats]:
        """Like ``encode``, also returning what the call did (tokens, padding, truncations)."""
        if truncation not in ("warn", "error", "count"):
            raise InputError(f"truncation {truncation!r} is not one of 'warn', 'error', 'count'")
        budget = check_batch_tokens(batch_tokens or self.batch_tokens, self.max_seq_length)
        items = validate_texts(texts)
        start = time.perf_counter()
        out = np.empty((len(items), self.dimension), dtype=np.float32)
        tokens = padded = truncated = batches = 0
        with _progress(len(items), show_progress) as advance:
            for lo in range(0, len(items), _WINDOW):
                window = items[lo : lo + _WINDOW]
                tok = self.tokenizer.encode(window)
                if truncation == "error" and tok.truncated.any():
                    first = lo + int(np.argmax(tok.truncated))
                    raise TruncationError(
                        f"input {first} is longer than {self.max_seq_length} tokens "
                        "(truncation='error'); shorten it or allow truncation"
                    )
                truncated += int(tok.truncated.sum())
                for rows in plan_batches(tok.lengths, budget):
                    ids, mask = pad_batch([tok.ids[i] for i in rows], self.tokenizer.pad_id)
                    out[lo + rows] = self.backend.embed(ids, mask)
                    tokens += int(mask.sum())
                    padded += mask.size
                    batches += 1
                    advance(len(rows))
        bad = non_finite_rows(out)
        if bad.any():
            raise BackendError(
                f"the {self.backend.name}/{self.backend.precision} backend produced non-finite "
                f"values for {int(bad.sum())} input(s), first at index {int(np.argmax(bad))}"
            )
        if normalize:
            out = normalize_rows(out)
        if truncated and truncation == "warn":
            log.warning(
                "%d of %d input(s) were longer than %d tokens and were truncated",
                truncated,
                len(items),
                self.max_seq_length,
            )
        stats = EncodeStats(
            len(items), tokens, padded, truncated, batches, time.perf_counter() - start
        )
        return out, stats


def validate_texts(texts: str | Iterable[str]) -> list[str]:
    """A list of strings, or an error naming the first bad item and why."""
    if isinstance(texts, str):
        items = [texts]  # checked like a list's items: a bare string is no exception
    elif texts is None or isinstance(texts, bytes | bytearray) or not isinstance(texts, Iterable):
        raise TypeError(
            f"texts must be a string or an iterable of strings, got {type(texts).__name__}"
        )
    else:
        items = list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"input {i} is {type(text).__name__}, expected str")
        bad = _SURROGATE.search(text)
        if bad:
            raise InputError(
                f"input {i} contains a lone surrogate (U+{ord(bad.group()):04X}) at position "
                f"{bad.start()}: it is not valid Unicode text"
            )
    return items


class _progress:
    """A rich progress bar with ETA on stderr when asked for; otherwise a no-op."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self._bar: object | None = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        if not self.enabled:
            return lambda n: None
        from rich.progress import Progress

        bar = Progress(*Progress.get_default_columns(), transient=True)
        task = bar.add_task("embedding", total=self.total)
        bar.start()
        self._bar = bar
        return lambda n: bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()  # type: ignore[attr-defined]
