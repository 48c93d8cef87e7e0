"""``distilmarco.distill``: knowledge distillation (Reimers & Gurevych 2020).

A student learns to put a sentence, and each of its translations, where the teacher puts the
sentence: MSE between the student's vectors and the teacher's vector of the source sentence.
With a shallower student of the same language it makes a smaller, faster model; with a
multilingual student and translated pairs it makes the teacher's vector space cross-lingual.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distilmarco.errors import InputError
from distilmarco.model.hub import resolve
from distilmarco.model.sentence import SentenceModule, load_sentence_module
from distilmarco.model.st_format import SentenceModelSpec
from distilmarco.model.st_write import save_sentence_model
from distilmarco.tokenizer import Tokenizer
from distilmarco.training.card import write_card
from distilmarco.training.config import TrainConfig, TrainResult
from distilmarco.training.data import Example
from distilmarco.training.dev import DevEvaluator
from distilmarco.training.losses import make_loss
from distilmarco.training.parallel import ParallelSet, RowRange, read_parallel
from distilmarco.training.sampler import SamplerConfig, count_batches
from distilmarco.training.student import cut_layers, spread_layers
from distilmarco.training.teacher import teacher_vectors
from distilmarco.training.trainer import Job, ProgressHook
from distilmarco.training.trainer import run as run_job

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder

log = logging.getLogger(__name__)

STUDENT_INIT = ".student-init"  # the K-layer student before training, inside the output folder


def unique_sources(sets: Sequence[ParallelSet]) -> list[str]:
    """Every source sentence once, in first-seen order (the rows of the teacher matrix)."""
    return list(dict.fromkeys(s for ps in sets for s in ps.sources))


@dataclass(frozen=True)
class DistillDev:
    """Dev figures of a student: MSE x 100 of its vectors (sources and translations) against the
    teacher's vectors of the sources, negated so that higher is better (``MSEEvaluator``), and,
    where there are translations, bitext retrieval accuracy averaged over both directions and
    every set (``TranslationEvaluator``)."""

    sets: tuple[ParallelSet, ...]
    teacher: np.ndarray  # (N, D): rows follow unique_sources(sets)

    @property
    def main(self) -> str:
        return "accuracy" if any(ps.pairs for ps in self.sets) else "negative_mse"

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        from distilmarco.evaluation.translation import bitext_scores, mse_x100

        row = {s: i for i, s in enumerate(unique_sources(self.sets))}
        targets: list[np.ndarray] = []
        students: list[np.ndarray] = []
        accuracies: list[float] = []
        for ps in self.sets:
            src = encoder.encode(list(ps.sources), truncation="count")
            teacher_src = self.teacher[[row[s] for s in ps.sources]]
            targets.append(teacher_src)
            students.append(src)
            pairs = ps.pairs
            if pairs:
                index = {s: i for i, s in enumerate(ps.sources)}
                trg = encoder.encode([t for _, t in pairs], truncation="count")
                aligned = src[[index[s] for s, _ in pairs]]
                targets.append(teacher_src[[index[s] for s, _ in pairs]])
                students.append(trg)
                texts = ([t for _, t in pairs], [s for s, _ in pairs])
                accuracies.append(bitext_scores(trg, aligned, *texts).mean)
        metrics = {"negative_mse": -mse_x100(np.concatenate(targets), np.concatenate(students))}
        if accuracies:
            metrics["accuracy"] = float(np.mean(accuracies))
        return metrics


def parallel_examples(sets: Sequence[ParallelSet], vectors: np.ndarray) -> Iterator[Example]:
    """One single-text example per source and per translation, each labelled with the teacher's
    vector of its source sentence."""
    row = {s: i for i, s in enumerate(unique_sources(sets))}
    for ps in sets:
        for n, (source, translations) in enumerate(
            zip(ps.sources, ps.translations, strict=True), start=1
        ):
            target = vectors[row[source]]
            where = f"{ps.name}:{n}"
            yield Example((source,), target, where)
            for text in translations:
                yield Example((text,), target, where)


def make_student(
    teacher: SentenceModelSpec,
    student: str | os.PathLike[str] | None,
    layers: int | Sequence[int] | None,
    output: Path,
) -> SentenceModule:
    """The student to train: loaded from ``student``, or ``layers`` of the teacher's (a count or
    the layer numbers), written first to ``output/.student-init`` so that evaluation during
    training and the saved folder describe its real depth."""
    if (student is None) == (layers is None):
        raise InputError("give either a student model or a number of teacher layers to keep")
    if student is not None:
        resolved = resolve(student)
        spec = SentenceModelSpec.from_folder(resolved.folder, name_hint=resolved.model_id)
    else:
        assert layers is not None
        total = teacher.transformer.num_layers
        picked = spread_layers(total, layers) if isinstance(layers, int) else list(layers)
        log.info("student: teacher layers %s of %d", picked, total)
        init = output / STUDENT_INIT
        shutil.rmtree(init, ignore_errors=True)
        save_sentence_model(cut_layers(teacher, picked), init, layout="st6")
        spec = SentenceModelSpec.from_folder(init)
    if spec.dimension != teacher.dimension:
        raise InputError(
            f"the student makes {spec.dimension}-d vectors but the teacher {teacher.dimension}-d; "
            "MSE distillation needs the same dimension"
        )
    return load_sentence_module(spec)


def distill(
    data: str | os.PathLike[str],
    teacher: str | os.PathLike[str],
    output: str | os.PathLike[str] = "distilled-model",
    *,
    student: str | os.PathLike[str] | None = None,
    layers: int | Sequence[int] | None = None,
    rows: RowRange | None = None,
    languages: Sequence[str] | None = None,
    dev: str | os.PathLike[str] | DevEvaluator | None = None,
    dev_rows: RowRange | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: ProgressHook | None = None,
    **options: Any,
) -> TrainResult:
    """Distill ``teacher`` into a student on parallel sentences ``data`` (TSV
    ``source<TAB>translation...`` or a Tatoeba folder) and write a sentence-transformers folder
    to ``output``.

    The student is ``student`` (a folder or Hub id) or a ``layers``-layer copy of the teacher.
    Teacher vectors are computed once and cached under ``cache_dir`` (default: see
    ``teacher.default_cache_dir``). ``dev`` is parallel data (cut to ``dev_rows``) scored every
    ``eval_steps`` steps, the best step kept. ``options`` are ``TrainConfig`` fields (epochs,
    batch_size, lr, warmup, seed, max_seq_length, eval_steps, precision, layout, ...).
    """
    config = TrainConfig(loss="mse", **options)
    out = Path(output)
    cache = Path(cache_dir) if cache_dir is not None else None
    langs = tuple(languages) if languages else None
    sets = read_parallel(Path(data), rows, langs)
    evaluator: DevEvaluator | None
    if isinstance(dev, str | os.PathLike):
        dev_sets = read_parallel(Path(dev), dev_rows, langs)
        evaluator = DistillDev(
            tuple(dev_sets), teacher_vectors(teacher, unique_sources(dev_sets), cache)
        )
    else:
        evaluator = dev
    resolved = resolve(teacher)
    teacher_spec = SentenceModelSpec.from_folder(resolved.folder, name_hint=resolved.model_id)
    sources = unique_sources(sets)
    vectors = teacher_vectors(teacher, sources, cache, device=config.device)
    log.info("%d sets, %d source sentences, teacher vectors ready", len(sets), len(sources))
    if not resume or not (out / STUDENT_INIT).is_dir():
        module = make_student(teacher_spec, student, layers, out)
    else:
        module = load_sentence_module(SentenceModelSpec.from_folder(out / STUDENT_INIT))
    spec = module.spec
    max_len = config.max_seq_length or spec.max_seq_length
    if not 2 <= max_len <= spec.transformer.max_position_embeddings:
        raise InputError(
            f"max_seq_length {max_len} must be between 2 and "
            f"{spec.transformer.max_position_embeddings}"
        )
    similarity = spec.similarity if spec.similarity in ("cosine", "dot") else None
    config = replace(config, max_seq_length=max_len, similarity=similarity)
    sampler = SamplerConfig(
        batch_size=config.batch_size,
        seed=config.seed,
        shuffle_buffer=config.shuffle_buffer,
        no_duplicates=bool(config.no_duplicates),
    )

    def examples() -> Iterator[Example]:
        return parallel_examples(sets, vectors)

    job = Job(
        module=module,
        tokenizer=Tokenizer.from_folder(spec.transformer_folder, max_len, spec.do_lower_case),
        loss=make_loss("mse", similarity="cosine", scale=config.scale),
        data=Path(data),
        output=out,
        config=config,
        steps_per_epoch=count_batches(examples(), sampler, 0),
        dev=evaluator,
        examples=examples,
    )
    result = run_job(job, resume=resume, progress=progress)
    if result.steps >= result.total_steps:
        write_card(job, f"{teacher} (teacher; MSE distillation)", result)
        shutil.rmtree(out / STUDENT_INIT, ignore_errors=True)
    return result
