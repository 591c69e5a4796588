"""Denoising losses for ε- and v-prediction models, with min-SNR weighting from diffusers' training utilities."""
from __future__ import annotations

import torch
from diffusers.training_utils import compute_snr


def denoising_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the model should predict for x_t = add_noise(latents, noise, t): the noise (ε) or the velocity (v)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"prediction type {kind!r} is not supported (epsilon or v_prediction)")


def snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ (Hang et al. 2023): the x0-error weight min(SNR, γ), expressed for the model's target."""
    snr = compute_snr(scheduler, timesteps)
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    return clipped / (snr + 1 if scheduler.config.prediction_type == "v_prediction" else snr)


def denoising_loss(prediction: torch.Tensor, scheduler, latents: torch.Tensor, noise: torch.Tensor,
                   timesteps: torch.Tensor, min_snr_gamma: float | None = None) -> torch.Tensor:
    """Mean squared error against the model's target, per-sample weighted by min-SNR-γ when given."""
    target = denoising_target(scheduler, latents, noise, timesteps)
    error = (prediction.float() - target.float()).pow(2).mean(dim=tuple(range(1, prediction.ndim)))
    if min_snr_gamma is not None:
        error = error * snr_weights(scheduler, timesteps, min_snr_gamma)
    return error.mean()
