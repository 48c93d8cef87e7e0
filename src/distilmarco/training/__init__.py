"""Fine-tuning and distillation: losses, a no-duplicates sampler, data readers, hard-negative mining, the trainer."""

from distilmarco.training.api import train
from distilmarco.training.config import EvalRecord, TrainConfig, TrainResult
from distilmarco.training.distill import distill

__all__ = ["EvalRecord", "TrainConfig", "TrainResult", "distill", "train"]
