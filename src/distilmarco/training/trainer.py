"""The training loop: AdamW, linear warm-up and decay, clipping, mixed precision, dev evaluation with
the best model kept, resumable checkpoints, a JSONL evaluation log. Generic over (loss, data).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from distilmarco.errors import InputError
from distilmarco.model.sentence import SentenceModule
from distilmarco.model.st_write import Layout, save_sentence_model
from distilmarco.tokenizer import Tokenizer
from distilmarco.training.batch import Batch, Tokens, collate
from distilmarco.training.config import EvalRecord, TrainConfig, TrainResult
from distilmarco.training.data import Example, margins_of, read_examples
from distilmarco.training.dev import DevEvaluator
from distilmarco.training.losses import Loss
from distilmarco.training.sampler import SamplerConfig, batches
from distilmarco.training.state import (
    Progress,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)

log = logging.getLogger(__name__)

EVAL_LOG = "eval_log.jsonl"
CHECKPOINTS = "checkpoints"
LOG_EVERY = 50  # steps between progress lines in the log
ProgressHook = Callable[[int, int, float | None], None]  # (step, total, loss)


@dataclass(frozen=True)
class Job:
    """Everything one run needs, already loaded and validated."""

    module: SentenceModule
    tokenizer: Tokenizer
    loss: Loss
    data: Path
    output: Path
    config: TrainConfig
    steps_per_epoch: int
    dev: DevEvaluator | None = None
    # Examples made in memory (distillation's texts with teacher vectors) instead of ``data``.
    examples: Callable[[], Iterator[Example]] | None = None


def choose_precision(requested: str, device: str) -> str:
    """``auto``: bf16 where the hardware computes it natively (CUDA with bf16, CPUs with AVX512-BF16
    or AMX), else fp32. fp16 is CUDA only (with a gradient scaler)."""
    if requested == "fp16" and not device.startswith("cuda"):
        raise InputError("fp16 training needs a CUDA GPU; use bf16 or fp32 on this device")
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return "fp32"
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def linear_schedule(step: int, warmup: int, total: int) -> float:
    """LR multiplier before optimizer step ``step`` (0-based): linear warm-up, then linear decay."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def make_optimizer(module: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights get no weight decay, as is usual for transformers."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (
            no_decay
            if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name
            else decay
        ).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, foreach=False)


def labels_for(loss: Loss, examples: list[Example]) -> list[Any] | None:
    if loss.label == "none":
        return None
    if loss.label == "score":
        return [ex.label for ex in examples]
    if loss.label == "margins":
        return [margins_of(ex) for ex in examples]
    vectors = [ex.label for ex in examples]
    return [v[0] if isinstance(v, tuple) and len(v) == 1 else v for v in vectors]


def run(job: Job, *, resume: bool = False, progress: ProgressHook | None = None) -> TrainResult:
    """Train ``job.module`` in place and write the model folder to ``job.output``."""
    cfg, module, output = job.config, job.module, job.output
    device = torch.device(cfg.device)
    precision = choose_precision(cfg.precision, cfg.device)
    output.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    module.to(device).train()
    optimizer = make_optimizer(module, cfg)
    total = job.steps_per_epoch * cfg.epochs
    warmup = cfg.warmup_steps(total)
    state = Progress(step=0, epoch=0, batch_in_epoch=0, best_metric=None, best_step=None)
    if resume:
        found = latest_checkpoint(output / CHECKPOINTS)
        if found is None:
            raise InputError(f"nothing to resume: no checkpoint under {output / CHECKPOINTS}")
        state, saved = load_checkpoint(found, module, optimizer)
        _check_same_config(saved, cfg, found)
        log.info("resuming from %s at step %d", found, state.step)
    elif (output / EVAL_LOG).exists():
        (output / EVAL_LOG).unlink()
    embed = _embedder(module, precision, device)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    sampler = SamplerConfig(
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        shuffle_buffer=cfg.shuffle_buffer,
        no_duplicates=cfg.in_batch_negatives if cfg.no_duplicates is None else cfg.no_duplicates,
    )
    evaluations: list[EvalRecord] = []
    encoder = None
    seen = tokens = 0
    spent = 0.0
    last_loss: float | None = None
    smoothed: float | None = None
    step = state.step
    best, best_step = state.best_metric, state.best_step

    def evaluate(epoch_pos: float) -> None:
        nonlocal encoder, best, best_step
        if job.dev is None:
            return
        encoder = _sync_encoder(encoder, module, job)
        metrics = job.dev(encoder)
        record = EvalRecord(step, round(epoch_pos, 4), metrics, smoothed)
        evaluations.append(record)
        with open(output / EVAL_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(record)) + "\n")
        value = metrics[job.dev.main]
        log.info("step %d: dev %s", step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if best is None or value > best:
            best, best_step = value, step
            _save_model(module, job)

    done = False
    for epoch in range(state.epoch, cfg.epochs):
        skip = state.batch_in_epoch if epoch == state.epoch else 0
        for index, examples in enumerate(_epoch_batches(job, sampler, epoch)):
            if index < skip:
                continue  # trained on before the checkpoint this run resumed from
            started = time.perf_counter()
            batch = collate(job.tokenizer, _columns(examples), labels_for(job.loss, examples)).to(
                device
            )
            lr = cfg.lr * linear_schedule(step, warmup, total)
            value = _train_step(job, optimizer, embed, batch, lr, scaler)
            step += 1
            spent += time.perf_counter() - started
            seen += batch.rows
            tokens += batch.tokens
            last_loss = value
            smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
            if not math.isfinite(value):
                raise InputError(f"the loss became {value} at step {step}; lower --lr")
            if progress is not None:
                progress(step, total, smoothed)
            if step % LOG_EVERY == 0:
                log.info(
                    "step %d/%d: loss %.4f, %.1f examples/s", step, total, smoothed, seen / spent
                )
            position = Progress(step, epoch, index + 1, best, best_step)
            if cfg.eval_steps and step % cfg.eval_steps == 0:
                evaluate(epoch + (index + 1) / max(job.steps_per_epoch, 1))
                position = Progress(step, epoch, index + 1, best, best_step)
            stop = cfg.stop_at_step is not None and step >= cfg.stop_at_step
            if (cfg.save_steps and step % cfg.save_steps == 0) or stop:
                _checkpoint(output, module, optimizer, position, cfg)
            if stop:
                done = True
                break
        if done:
            break
    finished = not done
    if finished:
        if job.dev is not None:
            if not evaluations or evaluations[-1].step != step:
                evaluate(float(cfg.epochs))
        else:
            _save_model(module, job)
        shutil.rmtree(output / CHECKPOINTS, ignore_errors=True)
    return TrainResult(
        output=str(output),
        steps=step,
        total_steps=total,
        examples=seen,
        tokens=tokens,
        train_seconds=spent,
        final_loss=last_loss,
        best_metric=best,
        best_step=best_step,
        evaluations=tuple(evaluations),
        precision=precision,
    )


def _columns(examples: list[Example]) -> list[list[str]]:
    return [list(col) for col in zip(*(ex.texts for ex in examples), strict=True)]


def _epoch_batches(job: Job, sampler: SamplerConfig, epoch: int) -> Iterator[list[Example]]:
    source = job.examples() if job.examples is not None else read_examples(job.data)
    return batches(source, sampler, epoch)


def _embedder(
    module: SentenceModule, precision: str, device: torch.device
) -> Callable[[Tokens], torch.Tensor]:
    from distilmarco.backends.torch_backend import PackedSentence

    packed = PackedSentence(module)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def embed(tokens: Tokens) -> torch.Tensor:
        ctx = (
            torch.autocast(device.type, dtype=dtype)
            if dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            # Packed: per-token layers skip padding; the same numbers as the padded forward.
            run = packed if not bool(tokens.mask.all()) else module
            return run(tokens.ids, tokens.mask).float()

    return embed


def _train_step(
    job: Job,
    optimizer: torch.optim.Optimizer,
    embed: Callable[[Tokens], torch.Tensor],
    batch: Batch,
    lr: float,
    scaler: torch.amp.GradScaler | None,
) -> float:
    """One optimizer step on one batch: gradients, clipping, update; returns the batch's loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    value = _backward(job.loss, embed, batch, scaler)
    if scaler is not None:
        scaler.unscale_(optimizer)
    if job.config.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(job.module.parameters(), job.config.max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return value


def _backward(
    loss: Loss,
    embed: Callable[[Tokens], torch.Tensor],
    batch: Batch,
    scaler: torch.amp.GradScaler | None,
) -> float:
    if scaler is None:
        return float(loss.backward(embed, batch))
    value = loss.compute(embed, batch)
    scaler.scale(value).backward()
    return float(value.detach())


def _sync_encoder(encoder: object, module: SentenceModule, job: Job):  # type: ignore[no-untyped-def]
    """An Encoder over the base folder whose torch module gets the training weights."""
    from distilmarco.encoder import Encoder

    if encoder is None:
        encoder = Encoder(
            job.module.spec.folder,
            device=job.config.device,
        )
    assert isinstance(encoder, Encoder)
    target = encoder.backend.module  # type: ignore[attr-defined]
    target.load_state_dict(module.state_dict())
    return encoder


def _save_model(module: SentenceModule, job: Job) -> None:
    layout: Layout = "st2" if job.config.layout == "st2" else "st6"
    # The folder keeps the base model's length limit: truncating in training is a training choice.
    save_sentence_model(module, job.output, layout=layout)


def _checkpoint(
    output: Path,
    module: SentenceModule,
    optimizer: torch.optim.Optimizer,
    position: Progress,
    cfg: TrainConfig,
) -> None:
    root = output / CHECKPOINTS
    folder = save_checkpoint(
        root / f"step-{position.step}", module, optimizer, position, asdict(cfg)
    )
    for old in root.iterdir():  # keep the newest only
        if old != folder and old.name.startswith("step-"):
            shutil.rmtree(old, ignore_errors=True)


_RESUME_KEYS = ("loss", "epochs", "batch_size", "lr", "warmup", "seed", "max_seq_length", "scale")


def _check_same_config(saved: dict[str, object], cfg: TrainConfig, folder: Path) -> None:
    now = asdict(cfg)
    for key in _RESUME_KEYS:
        if saved.get(key) != now[key]:
            raise InputError(
                f"cannot resume from {folder}: it was trained with {key}={saved.get(key)!r}, "
                f"this run asks for {now[key]!r}"
            )
