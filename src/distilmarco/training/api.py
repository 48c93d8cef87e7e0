"""``distilmarco.train``: fine-tune a sentence-embedding model on your own data in one call.

Everything that can be wrong with the input (files, fields, labels, dev set, options) is checked
before the first training step.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from distilmarco.errors import InputError
from distilmarco.model.hub import DEFAULT_MODEL, resolve
from distilmarco.model.sentence import load_sentence_module
from distilmarco.model.st_format import SentenceModelSpec
from distilmarco.tokenizer import Tokenizer
from distilmarco.training.card import write_card
from distilmarco.training.config import TrainConfig, TrainResult
from distilmarco.training.data import Requirements, read_examples, summarize
from distilmarco.training.dev import DevEvaluator, load_dev
from distilmarco.training.losses import make_loss
from distilmarco.training.sampler import SamplerConfig, count_batches
from distilmarco.training.trainer import Job, ProgressHook
from distilmarco.training.trainer import run as run_job

log = logging.getLogger(__name__)


def prepare(
    data: str | os.PathLike[str],
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: TrainConfig,
    dev: str | os.PathLike[str] | DevEvaluator | None = None,
) -> Job:
    """Load and check everything a run needs; raises before any training on bad input."""
    data_path = Path(data)
    resolved = resolve(model)
    spec = SentenceModelSpec.from_folder(resolved.folder, name_hint=resolved.model_id)
    similarity = config.similarity or spec.similarity
    if similarity not in ("cosine", "dot"):
        raise InputError(
            f"the model scores with {similarity}; training supports cosine or dot "
            "(pass similarity='cosine' or 'dot')"
        )
    loss = make_loss(
        config.loss,
        similarity=similarity,  # type: ignore[arg-type]
        scale=config.scale,
        mini_batch_size=config.mini_batch_size,
    )
    need = Requirements(
        loss.name, loss.min_columns, loss.max_columns, loss.label, config.score_range
    )
    summary = summarize(data_path, need)
    log.info("%s: %d examples of %d texts each", data_path, summary.examples, summary.columns)
    evaluator = load_dev(Path(dev)) if isinstance(dev, str | os.PathLike) else dev
    max_len = config.max_seq_length or spec.max_seq_length
    if not 2 <= max_len <= spec.transformer.max_position_embeddings:
        raise InputError(
            f"max_seq_length {max_len} must be between 2 and "
            f"{spec.transformer.max_position_embeddings}"
        )
    config = replace(config, max_seq_length=max_len, similarity=similarity)
    tokenizer = Tokenizer.from_folder(spec.transformer_folder, max_len, spec.do_lower_case)
    sampler = SamplerConfig(
        batch_size=config.batch_size,
        seed=config.seed,
        shuffle_buffer=config.shuffle_buffer,
        no_duplicates=config.in_batch_negatives
        if config.no_duplicates is None
        else config.no_duplicates,
    )
    steps = count_batches(read_examples(data_path), sampler, 0)
    spec = replace(spec, similarity=similarity)  # type: ignore[arg-type]
    return Job(
        module=load_sentence_module(spec),
        tokenizer=tokenizer,
        loss=loss,
        data=data_path,
        output=Path(output),
        config=config,
        steps_per_epoch=steps,
        dev=evaluator,
    )


def train(
    data: str | os.PathLike[str],
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    output: str | os.PathLike[str] = "trained-model",
    *,
    loss: str = "mnrl",
    dev: str | os.PathLike[str] | DevEvaluator | None = None,
    resume: bool = False,
    progress: ProgressHook | None = None,
    **options: Any,
) -> TrainResult:
    """Fine-tune ``model`` on ``data`` (JSONL, TSV or a BEIR folder) and write a
    sentence-transformers folder (with a model card) to ``output``.

    ``options`` are ``TrainConfig`` fields: epochs, batch_size, lr, warmup, seed, max_seq_length,
    eval_steps, save_steps, precision, layout, ... ``resume`` continues from the newest checkpoint
    in ``output`` (written every ``save_steps``) and ends with the same weights as an
    uninterrupted run.
    """
    config = TrainConfig(loss=loss, **options)
    job = prepare(data, model, output, config, dev)
    result = run_job(job, resume=resume, progress=progress)
    if result.steps >= result.total_steps:
        write_card(job, str(model), result)
    return result
