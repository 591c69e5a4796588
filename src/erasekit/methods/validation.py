"""Validators for methods that choose among candidate edits (RECE's epoch): a function pipe → detection rate of
the target on a few generated images (lower is better), built from a detector and the sampler."""
from __future__ import annotations

import warnings
from typing import Callable

from ..detectors import Detector, DetectorUnavailable, shapeworld_detector
from ..sampling import generate
from ..shapeworld.prompts import validation_prompts


def detection_validator(detector: Detector, prompts: list[str], num_images: int = 16, seed: int = 10_000
                        ) -> Callable[[object], float]:
    """Images i = 0…num_images-1 from prompt i mod len(prompts) with seed `seed + i`; returns their detection
    rate."""
    def detection_rate(pipe) -> float:
        seeds = [seed + i for i in range(num_images)]
        images = generate(pipe, [prompts[i % len(prompts)] for i in range(num_images)], seeds, progress=False)
        return detector.rate(images)

    detection_rate.__name__ = f"{detector.name}, n={num_images}"
    return detection_rate


def shapeworld_validator(spec, num_images: int = 16, seed: int = 10_000) -> Callable[[object], float] | None:
    """Detection rate of the spec's first target on short explicit prompts, judged by the ShapeWorld classifier;
    None (no selection) when the target is not a ShapeWorld concept or the classifier is missing."""
    try:
        prompts = validation_prompts(spec.targets[0])
        detector = shapeworld_detector(spec.targets[0])
    except KeyError:
        return None
    except DetectorUnavailable as e:
        warnings.warn(f"{e}: no validation-based selection", stacklevel=2)
        return None
    return detection_validator(detector, prompts, num_images, seed)
