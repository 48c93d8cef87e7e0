"""Cross-lingual evaluators against sentence-transformers' ``TranslationEvaluator`` and
``MSEEvaluator`` (same model folder, same sentences) and MTEB's bitext-mining metrics
(scikit-learn's weighted precision / recall / F1), to 1e-6."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distilmarco.errors import InputError
from distilmarco.evaluation.translation import bitext_scores, mse_x100

SOURCES = [
    "The cat sleeps on the sofa.",
    "I like green tea.",
    "Where is the station?",
    "He reads a book every week.",
    "It is raining in Paris.",
    "We will meet tomorrow.",
    "Where is the station?",  # a duplicate source: TranslationEvaluator forgives picking either
    "My brother plays the piano.",
]
TARGETS = [
    "Die Katze schläft auf dem Sofa.",
    "Me gusta el té verde.",
    "Wo ist der Bahnhof?",
    "Él lee un libro cada semana.",
    "Il pleut à Paris.",
    "Мы встретимся завтра.",
    "Wo ist der Bahnhof?",
    "Mój brat gra na pianinie.",
]


def test_bitext_scores_by_hand() -> None:
    # Rows 0 and 1 find each other's partner; row 2 finds its own; both directions checked.
    src = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    trg = np.array([[0.8, 0.2], [1.0, 0.0], [0.1, 1.0]])
    s = bitext_scores(src, trg)
    # forward: 0 -> 1 (cos 1.0), 1 -> 1, 2 -> 2; backward: 0 -> 1, 1 -> 0, 2 -> 2
    assert s.src2trg == pytest.approx(2 / 3) and s.trg2src == pytest.approx(1 / 3)
    # weighted P/R/F1 over gold classes 0, 1, 2: class 1 predicted twice (precision 1/2)
    assert s.recall == pytest.approx(2 / 3)
    assert s.precision == pytest.approx((0 + 0.5 + 1) / 3)
    assert s.f1 == pytest.approx((0 + 2 * 0.5 / 1.5 + 1) / 3)
    assert mse_x100(src, trg) == pytest.approx(100 * np.mean((src - trg) ** 2))
    with pytest.raises(InputError, match="differ in shape"):
        bitext_scores(src, trg[:2])


def test_weighted_prf_equals_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8))
    b = a + rng.normal(scale=1.2, size=a.shape)  # noisy: many wrong and repeated predictions
    s = bitext_scores(a, b)
    gold = np.arange(200)
    pred = np.argmax(
        (a / np.linalg.norm(a, axis=1, keepdims=True))
        @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T,
        axis=1,
    )
    assert 0.1 < s.src2trg < 0.9
    assert s.src2trg == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
    kw = {"average": "weighted", "zero_division": 0}
    assert s.precision == pytest.approx(precision_score(gold, pred, **kw), abs=1e-12)
    assert s.recall == pytest.approx(recall_score(gold, pred, **kw), abs=1e-12)
    assert s.f1 == pytest.approx(f1_score(gold, pred, **kw), abs=1e-12)


def test_translation_and_mse_equal_sentence_transformers(
    make_model: object, tiny_model_dir: Path
) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import (
        MSEEvaluator,
        TranslationEvaluator,
    )

    from distilmarco import Encoder
    from distilmarco.evaluation.crosslingual import evaluate_mse, evaluate_translation
    from distilmarco.training.parallel import ParallelSet

    student_dir = make_model("xling-student", seed=5)  # type: ignore[operator]
    st_student = SentenceTransformer(str(student_dir), device="cpu")
    st_teacher = SentenceTransformer(str(tiny_model_dir), device="cpu")

    ref = TranslationEvaluator(SOURCES, TARGETS)(st_student)
    # The maths alone, on sentence-transformers' own embeddings (its duplicate rule included).
    e1 = st_student.encode(SOURCES, convert_to_numpy=True)
    e2 = st_student.encode(TARGETS, convert_to_numpy=True)
    mine = bitext_scores(e1, e2, SOURCES, TARGETS)
    assert mine.src2trg == pytest.approx(ref["src2trg_accuracy"], abs=1e-6)
    assert mine.trg2src == pytest.approx(ref["trg2src_accuracy"], abs=1e-6)
    assert mine.mean == pytest.approx(ref["mean_accuracy"], abs=1e-6)
    # The whole path through our Encoder; MTEB's index rule here, so compare where no duplicate
    # is involved (the set without row 6).
    keep = [i for i in range(len(SOURCES)) if i != 6]
    src, trg = [SOURCES[i] for i in keep], [TARGETS[i] for i in keep]
    ref_clean = TranslationEvaluator(trg, src)(st_student)  # translation -> source first
    (ours,) = evaluate_translation(
        Encoder(student_dir), [ParallelSet("x", tuple(src), tuple((t,) for t in trg))]
    )
    assert ours.scores.src2trg == pytest.approx(ref_clean["src2trg_accuracy"], abs=1e-6)
    assert ours.scores.trg2src == pytest.approx(ref_clean["trg2src_accuracy"], abs=1e-6)

    ref_mse = MSEEvaluator(src, trg, teacher_model=st_teacher)(st_student)
    ref_src = MSEEvaluator(src, src, teacher_model=st_teacher)(st_student)
    (mse,) = evaluate_mse(
        Encoder(tiny_model_dir),
        Encoder(student_dir),
        [ParallelSet("x", tuple(src), tuple((t,) for t in trg))],
    )
    assert mse.translation_mse is not None and mse.translation_mse > 0.01
    # sentence-transformers sums in float32, we in float64: equal to 1e-6 relative (MSE x 100
    # of two unrelated random models is about 30 here).
    assert -mse.translation_mse == pytest.approx(ref_mse["negative_mse"], rel=1e-6)
    assert -mse.source_mse == pytest.approx(ref_src["negative_mse"], rel=1e-6)
    t = st_teacher.encode(src, convert_to_numpy=True)
    s = st_student.encode(trg, convert_to_numpy=True)
    assert -mse_x100(t, s) == pytest.approx(ref_mse["negative_mse"], rel=1e-6)
