"""DDIM inversion: from an image to the noise that the deterministic sampler turns back into it (Song et al.
2021; as used by All-but-One's purification and by attacks that start from real images)."""
from __future__ import annotations

import numpy as np
import torch

from ..utils.images import to_signed, to_uint8
from .trajectory import conditioning, ddim_scheduler, noise_prediction, x0_and_epsilon


@torch.no_grad()
def encode_images(pipe, images) -> torch.Tensor:
    """Images → scaled latents (the posterior mean: no sampling, so inversion is deterministic)."""
    pixels = to_signed(np.ascontiguousarray(to_uint8(images))).to(pipe.vae.device, pipe.vae.dtype)
    return pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor


@torch.no_grad()
def invert(pipe, images, prompts: list[str], steps: int, guidance: float = 1.0) -> torch.Tensor:
    """The x_T from which DDIM with `steps` steps and this prompt regenerates each image (up to the usual inversion
    error): the DDIM update run backwards, each step's noise predicted at the next timestep."""
    scheduler = ddim_scheduler(pipe, steps)
    cond = conditioning(pipe, prompts, guidance=guidance)
    x = encode_images(pipe, images)
    alphas = scheduler.alphas_cumprod.to(x.device)
    stride = scheduler.config.num_train_timesteps // steps
    for t in reversed(scheduler.timesteps):
        t_cur = int(t) - stride
        alpha_cur = alphas[t_cur] if t_cur >= 0 else scheduler.final_alpha_cumprod.to(x.device)
        alpha_next = alphas[int(t)]
        output = noise_prediction(pipe.unet, x, t, cond)
        eps = x0_and_epsilon(scheduler.config.prediction_type, output, x, alpha_next)[1]
        x0 = (x - (1 - alpha_cur).sqrt() * eps) / alpha_cur.sqrt()
        x = alpha_next.sqrt() * x0 + (1 - alpha_next).sqrt() * eps
    return x

