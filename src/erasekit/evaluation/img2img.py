"""Image-to-image persistence: start from real ShapeWorld images that show the target, regenerate them with
neutral prompts, and measure how often the target survives (the edit should remove it; the original keeps it)."""
from __future__ import annotations

from PIL import Image

from ..detectors import shapeworld_detector
from ..sampling import image_to_image
from ..shapeworld.domain import find_concept
from ..shapeworld.render import scene_images

NEUTRAL_PROMPTS = ("an image", "a picture", "a drawing of a shape", "a rendering")
STRENGTHS = (0.5, 0.75)


def source_images(target: str, count: int, seed: int = 0) -> tuple[str, list[Image.Image]]:
    """(attribute, procedural images showing `target`), other attributes varied."""
    attribute, value = find_concept(target)
    _, images = scene_images(count, seed, show={attribute: value.name}, p_empty=None)
    return attribute, [Image.fromarray(image) for image in images]


def persistence(pipe, target: str, count: int = 16, strengths=STRENGTHS, steps: int | None = None,
                seed: int = 0, classifier=None) -> dict[str, float]:
    """strength → fraction of regenerated images in which the classifier still sees the target (image i from
    seed `seed + i`, on erasekit's sampler: any family)."""
    _, images = source_images(target, count, seed)
    detector = shapeworld_detector(target, classifier)
    prompts = [NEUTRAL_PROMPTS[k % len(NEUTRAL_PROMPTS)] for k in range(count)]
    seeds = [seed + k for k in range(count)]
    return {f"strength={strength:g}": detector.rate(image_to_image(pipe, images, prompts, seeds, strength=strength,
                                                                   steps=steps))
            for strength in strengths}
