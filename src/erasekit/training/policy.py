"""Policy-gradient pieces for the methods that learn from a reward (ForceForget; DDPO, Black et al. 2024): advantages
normalised per prompt, and PPO's clipped surrogate (Schulman et al. 2017) on per-step log-probabilities."""
from __future__ import annotations

import torch

from .config import TrainingError


def check_rewards(rewards: torch.Tensor) -> torch.Tensor:
    """Rewards must be finite and in [0, 1] (a reward model that says otherwise is broken: stop, say so)."""
    if not torch.isfinite(rewards).all():
        raise TrainingError(f"the reward returned non-finite values ({rewards[~torch.isfinite(rewards)][:3].tolist()}"
                            "…): check the reward model")
    if (rewards < 0).any() or (rewards > 1).any():
        raise TrainingError(f"rewards must lie in [0, 1]; got values from {rewards.min():.4g} to {rewards.max():.4g}")
    return rewards


def prompt_advantages(rewards: torch.Tensor, prompt_ids: list[int], scale: str = "pooled", eps: float = 1e-6
                      ) -> torch.Tensor:
    """Rewards minus their prompt's mean over the batch (a prompt sampled once: minus the batch mean), divided by
    the spread of those residuals: pooled over the batch (`scale="pooled"`, default: a prompt whose samples
    scored almost alike gets advantages near 0 instead of its noise blown up to ±1) or each prompt's own standard
    deviation (`scale="prompt"`, DDPO's per-prompt normalisation; a prompt with no spread falls back to the
    batch's)."""
    rewards = rewards.double()
    ids = torch.tensor(prompt_ids)
    mean = rewards.mean().expand_as(rewards).clone()
    std = rewards.std(unbiased=False).expand_as(rewards).clone()
    groups = [ids == prompt for prompt in ids.unique() if int((ids == prompt).sum()) > 1]
    for rows in groups:
        mean[rows] = rewards[rows].mean()
        if scale == "prompt" and rewards[rows].std(unbiased=False) > eps:
            std[rows] = rewards[rows].std(unbiased=False)
    residuals = rewards - mean
    if scale == "pooled":
        std = residuals.pow(2).mean().sqrt().expand_as(rewards)
    elif scale != "prompt":
        raise TrainingError(f"advantage scale must be 'pooled' or 'prompt', not {scale!r}")
    return (residuals / (std + eps)).float()


LOG_RATIO_CAP = 10.0


def clipped_policy_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                        clip_range: float, advantage_clip: float = 5.0) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate, as a loss to minimise: mean of max(−A·ρ, −A·clip(ρ, 1 ± ε)), ρ = exp(log π − log
    π_old). Returns the loss and diagnostics (approximate KL, fraction of ratios clipped).

    The log-ratio is capped at 10 before exp: an action far from the policy's mean (ForceForget's switched actions)
    can move its log-probability by hundreds in one update, and exp would overflow to inf (NaN gradients); past the
    cap the sample trains no further, as dual-clip PPO bounds a negative advantage's term."""
    advantages = advantages.clamp(-advantage_clip, advantage_clip)
    ratio = torch.exp((log_prob - old_log_prob).clamp(max=LOG_RATIO_CAP))
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        stats = {"approx_kl": float(0.5 * ((log_prob - old_log_prob) ** 2).mean()),
                 "clipped": float(((ratio - 1).abs() > clip_range).float().mean())}
    return loss, stats
