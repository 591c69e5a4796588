"""Exploring starts for ForceForget's rounds (erasekit's knob, off by default).

A policy gradient can only reinforce what the policy samples. ShapeWorld draws the named shape in every sample of
a target prompt (32/32 at guidance 1–7.5, `scripts/shapeworld_probes.py explore`), so the target prompts' rewards
barely differ and DDPO has no direction to follow. With exploring starts, a share of each round's target-prompt
groups does not start from noise: each group takes an image of its prompt with the target left out or replaced (the
pool's `neutral` caption: "a red circle" for "a red triangle"), noises it to a late step of the schedule and lets the
policy denoise it from there under the target prompt, as image-to-image does. From late steps the original model
keeps the image's shape in some samples (from step 8 of 10: 4 of 24 of the triangle pool's neutral images, 9 of 24
of the style pool's; `scripts/shapeworld_probes.py late-starts`) and draws the target in the others, so these
groups' rewards differ and their advantages say which denoising steps keep the target away while the prompt's other
attributes stay ("a red shape" would not do: ShapeWorld redraws it as the target). Measured on ShapeWorld (README):
the exploring samples' reward rises, but what the policy learns there does not carry to samples from noise. Only
the steps an exploring trajectory ran are trained on; its group is normalised on its own.

Switched actions (`explore_mode="switch"`): the states come from the policy's own samples from noise instead. In a
share of the target-prompt groups every other sample runs from noise under its prompt until the first exploring
step and under its neutral caption from there on (ShapeWorld then draws the neutral caption's shape: it decides the
shape at the 9th of 10 steps); those late steps are trained as the policy's own actions under the target prompt
(PPO's ratio against the policy that sampled the round), in the same advantage group as the prompt's samples that
did not switch, so the reward compares the two continuations of the same kind of state.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...sampling import seed_generators, trajectory
from ...sampling.trajectory import conditioning, denoise, initial_latents, noised_to, transition_log_prob


@dataclass
class ExploringPlan:
    starts: list[int]      # per image: the step its trajectory starts at (0: from noise)
    sources: list[int]     # per image: the seed of the neutral caption's image it starts from (exploring images)

    def group_ids(self, ids: list[int], pool_size: int) -> list[int]:
        """Advantage groups: an exploring group apart from the same prompt's groups sampled from noise."""
        return [i + pool_size if s else i for i, s in zip(ids, self.starts)]


def exploring_plan(ids: list[int], harmful: list[bool], per_prompt: int, share: float, candidates: list[int],
                   gen: torch.Generator) -> ExploringPlan:
    """Which of a round's target-prompt groups (`per_prompt` consecutive images of one prompt) start late, from which
    step (drawn from `candidates`) and from which seed's image of their neutral caption (one per group)."""
    chosen = chosen_groups(ids, harmful, per_prompt, share, gen)
    starts, sources = [0] * len(ids), [0] * len(ids)
    for g in chosen:
        step = candidates[int(torch.randint(len(candidates), (1,), generator=gen))]
        source = int(torch.randint(2**31 - 1, (1,), generator=gen))
        for i in range(g, min(g + per_prompt, len(ids))):
            starts[i], sources[i] = step, source
    return ExploringPlan(starts, sources)


def chosen_groups(ids: list[int], harmful: list[bool], per_prompt: int, share: float, gen: torch.Generator
                  ) -> list[int]:
    """The first image of each target-prompt group chosen to explore: `share` of them, rounded."""
    targets = [g for g in range(0, len(ids), per_prompt) if harmful[ids[g]]]
    return [targets[int(j)] for j in torch.randperm(len(targets), generator=gen)[:round(share * len(targets))]]


def switching_rows(ids: list[int], harmful: list[bool], per_prompt: int, share: float, gen: torch.Generator
                   ) -> list[bool]:
    """Per image: it switches to its neutral caption (every other image of a chosen group, so that each chosen
    group holds both continuations)."""
    out = [False] * len(ids)
    for g in chosen_groups(ids, harmful, per_prompt, share, gen):
        for i in range(g + 1, min(g + per_prompt, len(ids)), 2):
            out[i] = True
    return out


def switched(pipe, scheduler, texts: list[str], neutral: list[str], seeds: list[int], switch: list[bool],
             first: int, guidance: float, eta: float):
    """Sample every image from noise under its prompt; from step `first` on, the `switch` images continue under
    their neutral captions. Returns (latents (n, steps + 1, …), log-probabilities (n, steps) under the prompts —
    for the switched steps, of the actions the neutral captions took — and the prompts' conditioning)."""
    steps = len(scheduler.timesteps)
    cond = conditioning(pipe, texts, guidance=guidance)
    x, generators = initial_latents(pipe, seeds)
    head = denoise(pipe, cond, x * scheduler.init_noise_sigma, scheduler, generators, stop_at=first, eta=eta,
                   keep="all", log_probs=True)
    latents = x.new_zeros((len(texts), steps + 1, *x.shape[1:]))
    log_probs = x.new_zeros((len(texts), steps))
    for k in range(first + 1):
        latents[:, k] = head.latents[k]
    if first:
        log_probs[:, :first] = head.log_probs
    for flag in (False, True):
        rows = [i for i, s in enumerate(switch) if s == flag]
        if not rows:
            continue
        words = [(neutral if flag else texts)[i] for i in rows]
        tail = denoise(pipe, conditioning(pipe, words, guidance=guidance), head.final[rows], scheduler,
                       [generators[i] for i in rows], start=first, eta=eta, keep="all", log_probs=not flag)
        latents[rows, first:] = torch.stack([tail.latents[k] for k in range(first, steps + 1)], dim=1)
        if not flag:
            log_probs[rows, first:] = tail.log_probs
            continue
        # the policy's log-probability of the actions its neutral captions took
        own = conditioning(pipe, [texts[i] for i in rows], guidance=guidance)
        log_probs[rows, first:] = torch.stack(
            [transition_log_prob(pipe, scheduler, own, latents[rows, k], scheduler.timesteps[k], latents[rows, k + 1],
                                 eta) for k in range(first, steps)], dim=1)
    return latents, log_probs, cond


def source_latents(pipe, neutral: list[str], seeds: list[int], steps: int, guidance: float) -> torch.Tensor:
    """Final latents of each (neutral caption, seed), sampled once per distinct pair."""
    pairs = sorted(set(zip(neutral, seeds)))
    final = trajectory(pipe, [p for p, _ in pairs], [s for _, s in pairs], steps=steps, guidance=guidance).final
    return torch.stack([final[pairs.index(pair)] for pair in zip(neutral, seeds)])


def explore(pipe, scheduler, texts: list[str], seeds: list[int], starts: list[int], sources: torch.Tensor,
            guidance: float, eta: float):
    """Denoise `sources` (final latents) under `texts` from each image's start step: every image's own seed draws
    its noise and its steps. Returns per start step (rows, trajectory)."""
    out = []
    for step in sorted(set(starts)):
        rows = [i for i, s in enumerate(starts) if s == step]
        generators = seed_generators([seeds[i] for i in rows], sources.device)
        x = noised_to(scheduler, sources[rows], generators, step)
        cond = conditioning(pipe, [texts[i] for i in rows], guidance=guidance)
        out.append((rows, denoise(pipe, cond, x, scheduler, generators, start=step, eta=eta, keep="all",
                                  log_probs=True)))
    return out
