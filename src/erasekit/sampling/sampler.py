"""The sampler: `generate` over any diffusers pipeline call."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..errors import ErasekitError
from ..models.text import check_prompts, encode, warn_truncated

DEFAULT_STEPS, DEFAULT_GUIDANCE = 20, 7.5


def sampler_defaults(pipe) -> tuple[int, float]:
    """The pipeline's recommended steps and guidance (written by ShapeWorld's trainer), else SD-like defaults."""
    card = getattr(pipe, "erasekit_defaults", None) or {}
    return card.get("steps", DEFAULT_STEPS), card.get("guidance", DEFAULT_GUIDANCE)


def settings(pipe, steps: int | None, guidance: float | None) -> tuple[int, float]:
    """(steps, guidance) of a run: the given ones or the pipeline's defaults, the steps checked."""
    default_steps, default_guidance = sampler_defaults(pipe)
    return check_steps(pipe, default_steps if steps is None else steps), \
        default_guidance if guidance is None else guidance


def seed_generators(seeds: list[int], device) -> list[torch.Generator]:
    """One generator per image, seeded with its seed: an image depends only on its own seed."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def unconditional(pipe, negative_prompt: str | None = None, warn: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(embeddings (1, tokens, d), pooled or None) of the unconditional branch, as the pipelines make it: the
    encoded negative prompt, or "" — which SDXL replaces by zeros."""
    negative = encode(pipe, [negative_prompt or ""], warn=warn)
    embeds, pooled = negative.embeddings, negative.pooled
    if not negative_prompt and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
        embeds, pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
    return embeds, pooled


def check_steps(pipe, steps: int) -> int:
    """Denoising steps within what the scheduler can take (1 … its number of training timesteps)."""
    limit = pipe.scheduler.config.num_train_timesteps
    if not isinstance(steps, int) or not 1 <= steps <= limit:
        raise ErasekitError(f"steps must be a whole number from 1 to {limit} (this scheduler's training "
                            f"timesteps), not {steps!r}")
    return steps


def prompt_per_seed(prompts: list[str] | str, seeds: list[int]) -> list[str]:
    """Checked prompts, one per seed (a single prompt is repeated)."""
    prompts = check_prompts(prompts)
    if len(prompts) == 1:
        prompts = prompts * len(seeds)
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    return prompts


@torch.no_grad()
def generate(pipe, prompts: list[str] | str | None, seeds: list[int], *, steps: int | None = None,
             guidance: float | None = None, negative_prompt: str | None = None, batch_size: int = 32,
             progress: bool = True, prompt_embeds: torch.Tensor | None = None,
             pooled_prompt_embeds: torch.Tensor | None = None, **pipe_kwargs):
    """One image per (prompt, seed) pair; a single prompt is repeated for every seed. Instead of prompts, one
    embedding per seed can be given (`prompt_embeds`, shaped like `encode(...).embeddings`; for SDXL also
    `pooled_prompt_embeds`). Options: steps, guidance, negative_prompt, batch_size, progress, and any keyword of
    the pipeline's call. Applied edits act inside the pipeline call (sampling-time ones through their hooks).
    Returns PIL images."""
    if prompt_embeds is None:
        prompts = prompt_per_seed(prompts, seeds)
    elif len(prompt_embeds) != len(seeds):
        raise ValueError(f"{len(prompt_embeds)} prompt embeddings but {len(seeds)} seeds")
    steps, guidance = settings(pipe, steps, guidance)
    if prompt_embeds is None:
        warn_truncated(pipe.tokenizer, list(dict.fromkeys(prompts)), stacklevel=3)
    device = pipe.unet.device
    if prompt_embeds is not None:
        negative, negative_pooled = unconditional(pipe, negative_prompt, warn=True)
        if negative_pooled is not None and pooled_prompt_embeds is None:
            raise ValueError("this pipeline also needs `pooled_prompt_embeds` with `prompt_embeds`")
    images = []
    bar = tqdm(total=len(seeds), desc="generate", unit="img", disable=not progress)
    for start in range(0, len(seeds), batch_size):
        chunk = slice(start, start + batch_size)
        generators = seed_generators(seeds[chunk], device)
        if prompt_embeds is None:
            text = {"prompt": prompts[chunk],
                    "negative_prompt": [negative_prompt] * len(generators) if negative_prompt else None}
        else:
            n = len(generators)
            text = {"prompt_embeds": prompt_embeds[chunk].to(device),
                    "negative_prompt_embeds": negative.to(device, prompt_embeds.dtype).expand(n, -1, -1)}
            if negative_pooled is not None:
                text["pooled_prompt_embeds"] = pooled_prompt_embeds[chunk].to(device)
                text["negative_pooled_prompt_embeds"] = negative_pooled.to(device).expand(n, -1)
        out = pipe(**text, num_inference_steps=steps, guidance_scale=guidance, generator=generators, **pipe_kwargs)
        images.extend(out.images)
        bar.update(len(generators))
    bar.close()
    return images

