"""The training core every method that trains builds on: one loop (`train`), its settings (`TrainingConfig`),
per-step randomness, atomic checkpoints, and the denoising losses."""
from .config import OPTIMIZERS, SCHEDULES, TrainingConfig, TrainingError
from .losses import denoising_loss, denoising_target, snr_weights
from .loop import StepContext, TrainingResult, train, world
from .policy import check_rewards, clipped_policy_loss, prompt_advantages
from .randomness import derived_seed, generator

__all__ = ["OPTIMIZERS", "SCHEDULES", "StepContext", "TrainingConfig", "TrainingError", "TrainingResult",
           "check_rewards", "clipped_policy_loss", "denoising_loss", "denoising_target", "derived_seed", "generator",
           "prompt_advantages", "snr_weights", "train", "world"]
