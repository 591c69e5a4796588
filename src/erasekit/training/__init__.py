"""The training core every method that trains builds on: one loop (`train`), its settings (`TrainingConfig`),
per-step randomness, atomic checkpoints, and the denoising losses."""
from .config import OPTIMIZERS, SCHEDULES, TrainingConfig, TrainingError
from .losses import denoising_loss, denoising_target, snr_weights
from .loop import StepContext, TrainingResult, train
from .randomness import derived_seed, generator

__all__ = ["OPTIMIZERS", "SCHEDULES", "StepContext", "TrainingConfig", "TrainingError", "TrainingResult",
           "denoising_loss", "denoising_target", "derived_seed", "generator", "snr_weights", "train"]
