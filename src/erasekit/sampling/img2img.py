"""Image-to-image on the project's sampler, for any family (SD1, SD2, SDXL): the image's latents are noised to the
step that `strength` starts from and denoised from there with DDIM. Per image, its seed's generator draws the
VAE posterior sample and then the noise, as diffusers' `StableDiffusionImg2ImgPipeline` draws them, so on a DDIM
SD pipeline the images are that pipeline's (tested)."""
from __future__ import annotations

import torch
from .sampler import prompt_per_seed, seed_generators, settings
from .trajectory import conditioning, ddim_scheduler, decode, denoise, noised_to


@torch.no_grad()
def image_to_image(pipe, images, prompts: list[str] | str, seeds: list[int], *, strength: float = 0.75,
                   steps: int | None = None, guidance: float | None = None, negative_prompt: str | None = None,
                   batch_size: int = 32):
    """One image per (image, prompt, seed); `strength` in (0, 1]: how much of the trajectory is run again.
    Returns PIL images."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], not {strength}")
    steps, guidance = settings(pipe, steps, guidance)
    prompts = prompt_per_seed(prompts, seeds)
    images = list(images)
    if len(images) != len(seeds):
        raise ValueError(f"{len(images)} images but {len(seeds)} seeds")
    out = []
    for first in range(0, len(seeds), batch_size):
        part = slice(first, first + batch_size)
        out += _batch(pipe, images[part], prompts[part], seeds[part], strength, steps, guidance, negative_prompt)
    return out


def _batch(pipe, images, prompts, seeds, strength, steps, guidance, negative_prompt):
    device = pipe.unet.device
    generators = seed_generators(seeds, device)
    scheduler = ddim_scheduler(pipe, steps)
    start = steps - min(int(steps * strength), steps)
    pixels = pipe.image_processor.preprocess(images).to(device, pipe.vae.dtype)
    latents = torch.cat([pipe.vae.encode(pixels[i:i + 1]).latent_dist.sample(generators[i])
                         for i in range(len(seeds))]) * pipe.vae.config.scaling_factor
    x = noised_to(scheduler, latents, generators, start)
    height, width = pixels.shape[-2:]
    cond = conditioning(pipe, prompts, guidance=guidance, negative_prompt=negative_prompt, height=height,
                        width=width)
    return decode(pipe, denoise(pipe, cond, x, scheduler, generators, start=start).final)
