"""The one sampler every command uses: per-image seeds, so an image depends only on its own seed."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .models.text import check_prompts

DEFAULT_STEPS, DEFAULT_GUIDANCE = 20, 7.5


def sampler_defaults(pipe) -> tuple[int, float]:
    """The pipeline's recommended steps and guidance (written by ShapeWorld's trainer), else SD-like defaults."""
    card = getattr(pipe, "erasekit_defaults", None) or {}
    return card.get("steps", DEFAULT_STEPS), card.get("guidance", DEFAULT_GUIDANCE)


@torch.no_grad()
def generate(pipe, prompts: list[str] | str | None, seeds: list[int], *, steps: int | None = None,
             guidance: float | None = None, negative_prompt: str | None = None, batch_size: int = 32,
             progress: bool = True, prompt_embeds: torch.Tensor | None = None, **pipe_kwargs):
    """One image per (prompt, seed) pair; a single prompt is repeated for every seed. Instead of prompts, one
    embedding per seed can be given (`prompt_embeds`, shaped like `encode(...).embeddings`; SD1/SD2).
    Returns PIL images."""
    if prompt_embeds is None:
        prompts = check_prompts(prompts)
        if len(prompts) == 1:
            prompts = prompts * len(seeds)
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    elif len(prompt_embeds) != len(seeds):
        raise ValueError(f"{len(prompt_embeds)} prompt embeddings but {len(seeds)} seeds")
    default_steps, default_guidance = sampler_defaults(pipe)
    steps = steps or default_steps
    guidance = default_guidance if guidance is None else guidance
    device = pipe.unet.device
    negative_embeds = None
    if prompt_embeds is not None:
        from .models.text import encode
        negative_embeds = encode(pipe, [negative_prompt or ""]).embeddings.to(device, prompt_embeds.dtype)
    images = []
    bar = tqdm(total=len(seeds), desc="generate", unit="img", disable=not progress)
    for start in range(0, len(seeds), batch_size):
        chunk = slice(start, start + batch_size)
        generators = [torch.Generator(device).manual_seed(int(s)) for s in seeds[chunk]]
        if prompt_embeds is None:
            text = {"prompt": prompts[chunk],
                    "negative_prompt": [negative_prompt] * len(generators) if negative_prompt else None}
        else:
            text = {"prompt_embeds": prompt_embeds[chunk].to(device),
                    "negative_prompt_embeds": negative_embeds.expand(len(generators), -1, -1)}
        out = pipe(**text, num_inference_steps=steps, guidance_scale=guidance, generator=generators, **pipe_kwargs)
        images.extend(out.images)
        bar.update(len(generators))
    bar.close()
    return images
