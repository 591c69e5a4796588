"""The one sampler every command uses (per-image seeds: an image depends only on its own seed)."""
from .sampler import DEFAULT_GUIDANCE, DEFAULT_STEPS, generate, prompt_per_seed, sample, sampler_defaults

__all__ = ["DEFAULT_GUIDANCE", "DEFAULT_STEPS", "generate", "prompt_per_seed", "sample", "sampler_defaults"]
