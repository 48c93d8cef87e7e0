"""Cross-lingual evaluation of a model on parallel sentences: bitext retrieval per set, and the
teacher-student MSE that distillation minimises. The maths is in ``translation``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from distilmarco.evaluation.translation import BitextScores, bitext_scores, mse_x100

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder
    from distilmarco.training.parallel import ParallelSet


@dataclass(frozen=True)
class TranslationResult:
    """Retrieval between one set's translations and their sources; ``scores.src2trg`` is
    translation -> source (MTEB's Tatoeba direction: each translation finds its English)."""

    name: str
    scores: BitextScores


@dataclass(frozen=True)
class MSEResult:
    """MSE x 100 against the teacher's vectors of the sources: of the student's vectors of the
    sources, and of its vectors of the translations (``MSEEvaluator``'s figure)."""

    name: str
    sentences: int
    source_mse: float
    translation_mse: float | None


def _translated(ps: ParallelSet) -> tuple[list[str], list[str]]:
    pairs = ps.pairs
    if not pairs:
        from distilmarco.errors import InputError

        raise InputError(f"{ps.name}: no translations to evaluate (one column only)")
    return [s for s, _ in pairs], [t for _, t in pairs]


def evaluate_translation(encoder: Encoder, sets: Sequence[ParallelSet]) -> list[TranslationResult]:
    results = []
    for ps in sets:
        sources, translations = _translated(ps)
        src = encoder.encode(sources, truncation="count")
        trg = encoder.encode(translations, truncation="count")
        results.append(TranslationResult(ps.name, bitext_scores(trg, src)))
    return results


def evaluate_mse(
    teacher: Encoder, student: Encoder, sets: Sequence[ParallelSet]
) -> list[MSEResult]:
    if teacher.dimension != student.dimension:
        from distilmarco.errors import InputError

        raise InputError(
            f"the teacher makes {teacher.dimension}-d vectors and the student "
            f"{student.dimension}-d: MSE needs the same dimension"
        )
    results = []
    for ps in sets:
        sources = list(ps.sources)
        target = teacher.encode(sources, truncation="count")
        source_mse = mse_x100(target, student.encode(sources, truncation="count"))
        translation_mse = None
        if ps.pairs:
            index = {s: i for i, s in enumerate(sources)}
            pair_sources, translations = _translated(ps)
            aligned = target[np.asarray([index[s] for s in pair_sources])]
            translation_mse = mse_x100(aligned, student.encode(translations, truncation="count"))
        results.append(MSEResult(ps.name, len(sources), source_mse, translation_mse))
    return results
