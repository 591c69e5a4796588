"""Denoising trajectories, for the methods and attacks that need more than images: the latents at chosen steps,
a run stopped at step k, each step's Gaussian log-probability (DDIM with η > 0, for policy gradients), with or
without gradients.

    traj = trajectory(pipe, ["a red triangle"], seeds=[0], keep="all")         # traj.latents[k]: x at step k
    traj = trajectory(pipe, prompts, seeds, eta=1.0, log_probs=True)           # ForceForget's samples
    x_t = trajectory(pipe, prompts, seeds, stop_at=12).final                   # ESD: the model's own x_t

Trajectories use DDIM (the pipeline's scheduler config, as a DDIMScheduler) with classifier-free guidance
computed as diffusers' pipelines do, and per-image generators seeded as `generate` does: with η = 0 and a DDIM
pipeline the final latents decode to the very images `generate` returns (tested).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

from ..models.text import encode
from .sampler import prompt_per_seed, seed_generators, settings, unconditional


@dataclass
class Conditioning:
    """Everything the UNet needs for one batch besides the latents and the timestep, with the unconditional rows
    first when guidance is on (as diffusers' pipelines batch them)."""
    embeddings: torch.Tensor                  # (rows, tokens, d)
    added: dict | None = None                 # SDXL's added_cond_kwargs
    guidance: float = 1.0

    @property
    def guided(self) -> bool:
        return self.guidance > 1.0


@dataclass
class Trajectory:
    timesteps: torch.Tensor                                      # the scheduler timesteps that were run
    latents: dict[int, torch.Tensor] = field(default_factory=dict)  # step k → x before step k (k = 0: the noise)
    final: torch.Tensor | None = None                            # x after the last step run
    log_probs: torch.Tensor | None = None                        # (images, steps run): log p(x_{k+1} | x_k)
    noise_predictions: dict[int, torch.Tensor] = field(default_factory=dict)  # guided ε per kept step
    cond: Conditioning | None = None                              # the conditioning it ran under


def ddim_scheduler(pipe, steps: int) -> DDIMScheduler:
    """A DDIM scheduler with the pipeline's noise schedule and prediction type, set to `steps` steps."""
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps, device=pipe.unet.device)
    return scheduler


def conditioning(pipe, prompts: list[str] | None, *, prompt_embeds: torch.Tensor | None = None,
                 pooled_prompt_embeds: torch.Tensor | None = None, guidance: float,
                 negative_prompt: str | None = None, height: int | None = None, width: int | None = None
                 ) -> Conditioning:
    """Encode prompts (or take their embeddings, which may carry gradients) and the negative prompt."""
    if prompt_embeds is None:
        encoded = encode(pipe, prompts)
        prompt_embeds, pooled_prompt_embeds = encoded.embeddings, encoded.pooled
    n = prompt_embeds.shape[0]
    device, dtype = pipe.unet.device, pipe.unet.dtype
    prompt_embeds = prompt_embeds.to(device, dtype)
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    rows, pooled = prompt_embeds, pooled_prompt_embeds
    if guidance > 1.0:
        neg_embeds, neg_pooled = unconditional(pipe, negative_prompt)
        rows = torch.cat([neg_embeds.to(device, dtype).expand(n, -1, -1), prompt_embeds])
        if sdxl:
            pooled = torch.cat([neg_pooled.to(device, dtype).expand(n, -1), pooled_prompt_embeds.to(device, dtype)])
    added = None
    if sdxl:
        if pooled is None:
            raise ValueError("this pipeline also needs `pooled_prompt_embeds` with `prompt_embeds`")
        size = _sample_size(pipe)
        h, w = height or size, width or size
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], device=device, dtype=dtype).expand(rows.shape[0], -1)
        added = {"text_embeds": pooled.to(device, dtype), "time_ids": time_ids}
    return Conditioning(rows, added, guidance)


def predict(pipe, x: torch.Tensor, t, embeddings: torch.Tensor, pooled: torch.Tensor | None = None
            ) -> torch.Tensor:
    """The UNet's plain (unguided) prediction for latents `x` at timestep `t` under the given text rows (one per
    latent, or one for all), with SDXL's added conditioning built as the pipelines build it."""
    n = x.shape[0]
    embeddings = embeddings.expand(n, -1, -1) if embeddings.shape[0] == 1 else embeddings
    pooled = pooled.expand(n, -1) if pooled is not None and pooled.shape[0] == 1 else pooled
    cond = conditioning(pipe, None, prompt_embeds=embeddings, pooled_prompt_embeds=pooled, guidance=1.0)
    return noise_prediction(pipe.unet, x, t, cond)


def _sample_size(pipe) -> int:
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def initial_latents(pipe, seeds: list[int], height: int | None = None, width: int | None = None
                    ) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Starting noise, one generator per image seeded with its seed (the generators continue for η > 0)."""
    device = pipe.unet.device
    generators = seed_generators(seeds, device)
    size = _sample_size(pipe)
    shape = (len(seeds), pipe.unet.config.in_channels, (height or size) // pipe.vae_scale_factor,
             (width or size) // pipe.vae_scale_factor)
    return randn_tensor(shape, generator=generators, device=device, dtype=pipe.unet.dtype), generators


def noised_to(scheduler: DDIMScheduler, latents: torch.Tensor, generators, step: int) -> torch.Tensor:
    """Clean latents noised to the scheduler's step `step`, each image's noise drawn by its generator (where
    image-to-image starts)."""
    noise = randn_tensor(latents.shape, generator=generators, device=latents.device, dtype=latents.dtype)
    return scheduler.add_noise(latents, noise, scheduler.timesteps[step:step + 1].repeat(len(latents)))


def noise_prediction(unet, x: torch.Tensor, t, cond: Conditioning) -> torch.Tensor:
    """The guided prediction ε_u + g (ε_c − ε_u), batched as diffusers' pipelines batch it."""
    inputs = torch.cat([x, x]) if cond.guided else x
    out = unet(inputs, t, encoder_hidden_states=cond.embeddings, added_cond_kwargs=cond.added).sample
    if not cond.guided:
        return out
    uncond, text = out.chunk(2)
    return uncond + cond.guidance * (text - uncond)


def ddim_step(scheduler: DDIMScheduler, model_output: torch.Tensor, t, x: torch.Tensor, eta: float,
              generators: list[torch.Generator] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One DDIM step x_t → x_{t-1} (Song et al. 2021, eq. 12), as diffusers' DDIMScheduler.step, returning also
    the log-probability of the sample under the step's Gaussian, averaged over its elements as DDPO does (None
    when η = 0: the step is deterministic)."""
    mean, std = ddim_mean_std(scheduler, model_output, t, x, eta)
    if eta == 0:
        return mean, None
    noise = randn_tensor(model_output.shape, generator=generators, device=x.device, dtype=x.dtype)
    sample = mean + std * noise
    return sample, gaussian_log_prob(sample.detach(), mean, std)


def ddim_mean_std(scheduler: DDIMScheduler, model_output: torch.Tensor, t, x: torch.Tensor, eta: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and standard deviation of the DDIM step's Gaussian p(x_{t-1} | x_t) for a model output."""
    alpha_t, alpha_prev = _alphas(scheduler, t, x.device)
    x0, eps = x0_and_epsilon(scheduler.config.prediction_type, model_output, x, alpha_t)
    if scheduler.config.thresholding:
        raise ValueError("DDIM with dynamic thresholding is not supported by erasekit's trajectories")
    if scheduler.config.clip_sample:  # x0 only, as diffusers does without use_clipped_model_output
        x0 = x0.clamp(-scheduler.config.clip_sample_range, scheduler.config.clip_sample_range)
    std = step_std(scheduler, t, eta, x.device)
    mean = alpha_prev.sqrt() * x0 + (1 - alpha_prev - std**2).sqrt() * eps
    return mean, std


def _alphas(scheduler: DDIMScheduler, t, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ᾱ_t, ᾱ of the step's target timestep) of a DDIM step from timestep t."""
    prev_t = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod.to(device)
    return alphas[int(t)], alphas[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod.to(device)


def step_std(scheduler: DDIMScheduler, t, eta: float, device="cpu") -> torch.Tensor:
    """σ of the DDIM step from timestep t: η √((1 − ᾱ_prev)/(1 − ᾱ_t) (1 − ᾱ_t/ᾱ_prev)); 0 on a deterministic
    step (η = 0, or the last step with set_alpha_to_one)."""
    alpha_t, alpha_prev = _alphas(scheduler, t, device)
    return eta * ((1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)).sqrt()


def gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(sample; mean, std²) per image, averaged over its elements (DDPO's convention); 0 where std = 0 (the
    last step with set_alpha_to_one is deterministic and adds nothing)."""
    if std == 0:
        return torch.zeros(sample.shape[0], device=sample.device, dtype=sample.dtype)
    log_prob = -(sample - mean) ** 2 / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return log_prob.mean(dim=tuple(range(1, sample.ndim)))


def transition_log_prob(pipe, scheduler: DDIMScheduler, cond: Conditioning, x: torch.Tensor, t,
                        x_next: torch.Tensor, eta: float) -> torch.Tensor:
    """log p(x_next | x) of one stored DDIM step under the model as it is now (with gradients when they are on):
    the policy's log-probability a policy-gradient update needs (DDPO)."""
    eps = noise_prediction(pipe.unet, scheduler.scale_model_input(x, t), t, cond)
    mean, std = ddim_mean_std(scheduler, eps, t, x, eta)
    return gaussian_log_prob(x_next, mean, std)


def x0_and_epsilon(kind: str, output: torch.Tensor, x: torch.Tensor, alpha_t: torch.Tensor):
    """(predicted x0, predicted noise) from a model output of the given prediction type at x with ᾱ_t."""
    a, s = alpha_t.sqrt(), (1 - alpha_t).sqrt()
    if kind == "epsilon":
        return (x - s * output) / a, output
    if kind == "v_prediction":
        return a * x - s * output, a * output + s * x
    if kind == "sample":
        return output, (x - a * output) / s
    raise ValueError(f"prediction type {kind!r} is not supported")


def trajectory(pipe, prompts: list[str] | str | None, seeds: list[int], *, steps: int | None = None,
               guidance: float | None = None, negative_prompt: str | None = None, eta: float = 0.0,
               keep: str | list[int] = (), stop_at: int | None = None, log_probs: bool = False,
               grad: bool = False, prompt_embeds: torch.Tensor | None = None,
               pooled_prompt_embeds: torch.Tensor | None = None, latents: torch.Tensor | None = None
               ) -> Trajectory:
    """Run DDIM from per-seed noise (or from `latents`) for steps 0 … stop_at − 1 (all by default). `keep`:
    step indices (or "all") whose input latents and guided noise predictions are kept. `log_probs` needs η > 0.
    Gradients flow (to prompt_embeds, trainable weights) only with `grad=True`."""
    steps, guidance = settings(pipe, steps, guidance)
    if prompt_embeds is None:
        prompts = prompt_per_seed(prompts, seeds)
    with contextlib.nullcontext() if grad else torch.no_grad():
        cond = conditioning(pipe, prompts, prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
                            guidance=guidance, negative_prompt=negative_prompt)
        x, generators = initial_latents(pipe, seeds)
        x = x if latents is None else latents.to(x.device, x.dtype)
        scheduler = ddim_scheduler(pipe, steps)
        return denoise(pipe, cond, x * scheduler.init_noise_sigma, scheduler, generators, eta=eta, keep=keep,
                       stop_at=stop_at, log_probs=log_probs)


def denoise(pipe, cond: Conditioning, x: torch.Tensor, scheduler: DDIMScheduler, generators, *, start: int = 0,
            stop_at: int | None = None, eta: float = 0.0, keep: str | list[int] = (), log_probs: bool = False
            ) -> Trajectory:
    """The DDIM loop over the scheduler's steps start … stop_at − 1, from x at step `start`."""
    steps = len(scheduler.timesteps)
    stop_at = steps if stop_at is None else stop_at
    if not start <= stop_at <= steps:
        raise ValueError(f"stop_at must be between {start} and {steps}, not {stop_at}")
    if log_probs and eta <= 0:
        raise ValueError("log-probabilities need a stochastic step: give eta > 0")
    keep = range(steps + 1) if keep == "all" else set(keep)
    result = Trajectory(scheduler.timesteps[start:stop_at], cond=cond)
    logps = []
    for k in range(start, stop_at):
        t = scheduler.timesteps[k]
        eps = noise_prediction(pipe.unet, scheduler.scale_model_input(x, t), t, cond)
        if k in keep:
            result.latents[k], result.noise_predictions[k] = x, eps
        x, logp = ddim_step(scheduler, eps, t, x, eta, generators)
        if logp is not None:
            logps.append(logp)
    if stop_at in keep:
        result.latents[stop_at] = x
    result.final = x
    result.log_probs = torch.stack(logps, dim=1) if log_probs else None
    return result


@torch.no_grad()
def decode(pipe, latents: torch.Tensor):
    """Latents → PIL images, as the pipelines decode them."""
    images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(images, output_type="pil")
