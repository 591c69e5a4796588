"""One round of ForceForget's policy sampling (DDPO): draw prompts from the pool, sample them with DDIM η = 1
keeping every step's latents and log-probability, score the images, and normalise the rewards per prompt.

Under data-parallel training each process samples its share of the round's images (image i on process i mod N);
the rewards are gathered so every process normalises with the same statistics."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...sampling import ddim_scheduler, decode, settings, trajectory
from ...training import check_rewards, generator, prompt_advantages, world
from .pool import PoolPrompt


@dataclass
class Rollout:
    prompts: list[PoolPrompt]        # this process's samples
    latents: torch.Tensor            # (n, steps + 1, C, H, W): x before each step, and the final x
    log_probs: torch.Tensor          # (n, steps): log p(x_{k+1} | x_k) when sampled
    advantages: torch.Tensor         # (n,)
    cond: object                     # sampling.Conditioning of the n prompts (guided rows)
    rewards: torch.Tensor            # (all samples of the round,), for the log
    local_rewards: torch.Tensor      # (n,): this process's samples
    parts: dict                      # mean r_safe / r_align (this process's samples)


def draw_prompts(pool: list[PoolPrompt], count: int, per_prompt: int, harmful_share: float, gen: torch.Generator
                 ) -> list[int]:
    """Pool indices of a round: count / per_prompt distinct prompts (about `harmful_share` of them target
    prompts), each repeated per_prompt times for per-prompt normalisation."""
    harmful = [i for i, p in enumerate(pool) if p.harmful]
    benign = [i for i, p in enumerate(pool) if not p.harmful]
    groups = max(1, count // per_prompt)
    n_harmful = groups if not benign else min(groups, max(1, round(groups * harmful_share)))
    chosen = [harmful[int(j)] for j in torch.randint(len(harmful), (n_harmful,), generator=gen)]
    if benign and groups > n_harmful:
        chosen += [benign[int(j)] for j in torch.randint(len(benign), (groups - n_harmful,), generator=gen)]
    return [i for i in chosen for _ in range(per_prompt)]


def sample_round(pipe, pool, reward, config, round_index: int) -> Rollout:
    """The round's samples, rewards and advantages (no gradients), reproducible from (seed, round)."""
    gen = generator(config.seed, "round", round_index)
    ids = draw_prompts(pool, config.batch_size, config.samples_per_prompt, config.harmful_share, gen)
    seeds = torch.randint(0, 2**31 - 1, (len(ids),), generator=gen).tolist()
    processes, rank = world()
    mine = list(range(rank, len(ids), processes))
    prompts = [pool[ids[i]] for i in mine]
    with torch.no_grad():
        traj = trajectory(pipe, [p.text for p in prompts], [seeds[i] for i in mine], steps=config.sample_steps,
                          guidance=config.guidance, eta=config.eta, keep="all", log_probs=True)
        rewards, parts = reward(decode(pipe, traj.final), prompts)
    local = check_rewards(rewards.double().cpu())
    rewards = _gathered(local, len(ids), processes, rank)
    advantages = prompt_advantages(rewards, ids, config.advantage_scale)[mine]
    steps = len(traj.timesteps)
    latents = torch.stack([traj.latents[k] for k in range(steps + 1)], dim=1)
    return Rollout(prompts, latents, traj.log_probs, advantages, traj.cond, rewards, local, parts)


def _gathered(mine: torch.Tensor, total: int, processes: int, rank: int) -> torch.Tensor:
    """The whole round's rewards, in image order, from every process's share."""
    if processes == 1:
        return mine
    import torch.distributed as dist
    share = -(-total // processes)
    padded = torch.zeros(share, dtype=mine.dtype)
    padded[:len(mine)] = mine
    parts = [torch.zeros_like(padded) for _ in range(processes)]
    dist.all_gather(parts, padded)
    out = torch.zeros(total, dtype=mine.dtype)
    for r, part in enumerate(parts):
        count = len(range(r, total, processes))
        out[r::processes] = part[:count]
    return out


def schedule(pipe, config):
    """The DDIM scheduler of the policy's samples (the config's steps, else the model's sampler default)."""
    return ddim_scheduler(pipe, settings(pipe, config.sample_steps, config.guidance)[0])
