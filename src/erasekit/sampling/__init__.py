"""The one sampler every command uses (per-image seeds: an image depends only on its own seed), and denoising
trajectories for the methods and attacks that train or optimise through sampling."""
from .img2img import image_to_image
from .inversion import encode_images, invert
from .sampler import (DEFAULT_GUIDANCE, DEFAULT_STEPS, generate, prompt_per_seed, sampler_defaults,
                      seed_generators, settings, unconditional)
from .trajectory import (Conditioning, Trajectory, conditioning, ddim_scheduler, ddim_step, decode, predict,
                         trajectory, transition_log_prob)

__all__ = ["DEFAULT_GUIDANCE", "DEFAULT_STEPS", "Conditioning", "Trajectory", "conditioning", "ddim_scheduler",
           "ddim_step", "decode", "encode_images", "generate", "image_to_image", "invert", "predict", "prompt_per_seed",
           "sampler_defaults", "seed_generators", "settings", "trajectory", "transition_log_prob",
           "unconditional"]
