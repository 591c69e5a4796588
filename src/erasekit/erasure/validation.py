"""Validation evaluators for methods that choose among candidates (RECE's epoch): detection rate of the target."""
from __future__ import annotations

import warnings


def shapeworld_validator(spec, num_images: int = 16, seed: int = 10_000):
    """Detection rate of the spec's first target on explicit prompts, judged by the ShapeWorld classifier.
    Returns None (no selection) when the target is not a ShapeWorld concept or the classifier is missing."""
    from ..shapeworld.classifier import CLASSIFIER_DIR, ShapeWorldClassifier
    from ..evaluation.evaluators import ShapeWorldAttribute
    from ..shapeworld.domain import find_concept
    try:
        attribute, value = find_concept(spec.targets[0])
    except KeyError:
        return None
    if not (CLASSIFIER_DIR / "model.safetensors").exists():
        warnings.warn("the ShapeWorld classifier is not installed: no validation-based selection", stacklevel=2)
        return None
    classifier = ShapeWorldClassifier.load()
    prompts = [f"a {spec.targets[0]}"] if attribute == "shape" else \
        [f"a {s} in the style of {value.artist}" if spec.targets[0] == value.artist else f"a {spec.targets[0]} {s}"
         for s in ("circle", "square", "triangle", "star")]

    def detection_rate(pipe) -> float:
        from ..generation import generate
        seeds = [seed + i for i in range(num_images)]
        images = generate(pipe, [prompts[i % len(prompts)] for i in range(num_images)], seeds, progress=False)
        metric = ShapeWorldAttribute(attribute, value.name, classifier=classifier)
        metric.update(images)
        return metric.compute().item()

    detection_rate.__name__ = f"shapeworld_classifier[{attribute}={value.name}, n={num_images}]"
    return detection_rate
