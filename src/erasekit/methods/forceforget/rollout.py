"""One round of ForceForget's policy sampling (DDPO): draw prompts from the pool, sample them with DDIM η = 1
keeping every step's latents and log-probability, score the images, and normalise the rewards per prompt.

With exploring starts (`explore.py`) a share of the target prompts' groups starts late instead; with switched
actions (`explore_mode="switch"`) half of such a group's samples finish under the prompt's neutral caption.

Under data-parallel training each process samples its share of the round's images (image i on process i mod N);
the rewards are gathered so every process normalises with the same statistics."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import ErasekitError
from ...sampling import conditioning, ddim_scheduler, decode, settings, trajectory
from ...sampling.trajectory import step_std
from ...training import check_rewards, generator, prompt_advantages, world
from .explore import explore, exploring_plan, source_latents, switched, switching_rows
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
    starts: list[int] | None = None  # per sample: the step its trajectory started at (exploring starts, `explore.py`)
    switched: list[bool] | None = None  # per sample: it finished under its neutral caption (switched actions)

    @property
    def exploring(self) -> list[bool] | None:
        """Per sample: it started late, or switched."""
        return self.switched if self.starts is None else [s > 0 for s in self.starts]

    @property
    def valid(self) -> torch.Tensor | None:
        """(n, steps) bool: the steps each trajectory ran."""
        if self.starts is None:
            return None
        return torch.arange(self.log_probs.shape[1]).unsqueeze(0) >= torch.tensor(self.starts).unsqueeze(1)


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
    plan = switch = None
    if config.explore_share > 0 and config.explore_mode == "switch":
        switch = switching_rows(ids, [p.harmful for p in pool], config.samples_per_prompt, config.explore_share, gen)
    elif config.explore_share > 0:
        plan = exploring_plan(ids, [p.harmful for p in pool], config.samples_per_prompt, config.explore_share,
                              explore_steps(pipe, config), gen)
    processes, rank = world()
    mine = list(range(rank, len(ids), processes))
    prompts = [pool[ids[i]] for i in mine]
    with torch.no_grad():
        if switch is not None:
            guidance = settings(pipe, config.sample_steps, config.guidance)[1]
            latents, log_probs, cond = switched(
                pipe, schedule(pipe, config), [p.text for p in prompts], [p.neutral for p in prompts],
                [seeds[i] for i in mine], [switch[i] for i in mine], explore_steps(pipe, config)[0], guidance,
                config.eta)
        elif plan is None:
            traj = trajectory(pipe, [p.text for p in prompts], [seeds[i] for i in mine], steps=config.sample_steps,
                              guidance=config.guidance, eta=config.eta, keep="all", log_probs=True)
            latents, log_probs, cond = _stacked(traj), traj.log_probs, traj.cond
        else:
            latents, log_probs, cond = _with_exploring(pipe, config, prompts, [seeds[i] for i in mine],
                                                       [plan.starts[i] for i in mine], [plan.sources[i] for i in mine])
        rewards, parts = reward(decode(pipe, latents[:, -1]), prompts)
    local = check_rewards(rewards.double().cpu())
    rewards = _gathered(local, len(ids), processes, rank)
    groups = ids if plan is None else plan.group_ids(ids, len(pool))
    advantages = prompt_advantages(rewards, groups, config.advantage_scale)[mine]
    starts = None if plan is None else [plan.starts[i] for i in mine]
    switched_here = None if switch is None else [switch[i] for i in mine]
    return Rollout(prompts, latents, log_probs, advantages, cond, rewards, local, parts, starts, switched_here)


def _stacked(traj) -> torch.Tensor:
    """(n, steps + 1, C, H, W): x before each step, and the final x."""
    return torch.stack([traj.latents[k] for k in range(len(traj.timesteps) + 1)], dim=1)


def explore_steps(pipe, config) -> list[int]:
    """The steps an exploring trajectory may start at: the stochastic ones from `explore_from` of the schedule on."""
    scheduler = schedule(pipe, config)
    steps = len(scheduler.timesteps)
    first = min(steps - 1, round(config.explore_from * steps))
    out = [k for k in range(first, steps) if step_std(scheduler, scheduler.timesteps[k], config.eta) > 0]
    if not out:
        raise ErasekitError(f"explore_from={config.explore_from} leaves no stochastic step to start from")
    return out


def _with_exploring(pipe, config, prompts, seeds, starts, sources):
    """Sample the images that start from noise, then the exploring ones from their neutral captions' images;
    assemble latents and log-probabilities in image order (steps an exploring trajectory did not run hold its
    first latents and log-probability 0; `Rollout.valid` masks them out)."""
    plain = [i for i, s in enumerate(starts) if s == 0]
    rows = [i for i, s in enumerate(starts) if s > 0]
    steps, guidance = settings(pipe, config.sample_steps, config.guidance)
    runs = []  # (rows, trajectory, start step)
    if plain:
        runs.append((plain, trajectory(pipe, [prompts[i].text for i in plain], [seeds[i] for i in plain],
                                       steps=steps, guidance=guidance, eta=config.eta, keep="all", log_probs=True), 0))
    if rows:
        images = source_latents(pipe, [prompts[i].neutral for i in rows], [sources[i] for i in rows], steps, guidance)
        runs += [([rows[j] for j in part], run, starts[rows[part[0]]])
                 for part, run in explore(pipe, schedule(pipe, config), [prompts[i].text for i in rows],
                                          [seeds[i] for i in rows], [starts[i] for i in rows], images, guidance,
                                          config.eta)]
    final, logp = runs[0][1].final, runs[0][1].log_probs
    latents = final.new_zeros((len(prompts), steps + 1, *final.shape[1:]))
    log_probs = logp.new_zeros((len(prompts), steps))
    for part, run, step in runs:
        _place(run, part, step, latents, log_probs)
    return latents, log_probs, conditioning(pipe, [p.text for p in prompts], guidance=guidance)


def _place(run, rows: list[int], step: int, latents, log_probs) -> None:
    """Put a run (started at `step`; 0: from noise) into the round's tensors at `rows`."""
    steps = log_probs.shape[1]
    latents[rows, step:] = torch.stack([run.latents[k] for k in range(step, steps + 1)], dim=1)
    latents[rows, :step] = run.latents[step].unsqueeze(1)
    log_probs[rows, step:] = run.log_probs


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
