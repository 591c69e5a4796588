"""Image-to-image persistence: start from real ShapeWorld images that show the target, regenerate them with
neutral prompts, and measure how often the target survives (the edit should remove it; the original keeps it)."""
from __future__ import annotations

import torch
from PIL import Image

from ..detectors import shapeworld_detector
from ..sampling import sampler_defaults
from ..shapeworld.domain import find_concept
from ..shapeworld.render import scene_images

NEUTRAL_PROMPTS = ("an image", "a picture", "a drawing of a shape", "a rendering")
STRENGTHS = (0.5, 0.75)


def source_images(target: str, count: int, seed: int = 0) -> tuple[str, list[Image.Image]]:
    """(attribute, procedural images showing `target`), other attributes varied."""
    attribute, value = find_concept(target)
    _, images = scene_images(count, seed, show={attribute: value.name}, p_empty=None)
    return attribute, [Image.fromarray(image) for image in images]


@torch.no_grad()
def persistence(pipe, target: str, count: int = 16, strengths=STRENGTHS, steps: int | None = None,
                seed: int = 0, classifier=None) -> dict[str, float]:
    """strength → fraction of regenerated images in which the classifier still sees the target."""
    from diffusers import StableDiffusionImg2ImgPipeline
    _, images = source_images(target, count, seed)
    detector = shapeworld_detector(target, classifier)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    default_steps, guidance = sampler_defaults(pipe)
    out = {}
    for strength in strengths:
        result = img2img([NEUTRAL_PROMPTS[k % len(NEUTRAL_PROMPTS)] for k in range(count)], image=images,
                         strength=strength, num_inference_steps=steps or default_steps, guidance_scale=guidance,
                         generator=[torch.Generator().manual_seed(seed + k) for k in range(count)]).images
        out[f"strength={strength:g}"] = detector.rate(result)
    return out
