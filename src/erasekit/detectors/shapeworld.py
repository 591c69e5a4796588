"""The ShapeWorld classifier as a detector: one attribute value (a shape, colour, texture or its artist)."""
from __future__ import annotations

from functools import lru_cache

import torch

from ..shapeworld.classifier import CLASSIFIER_DIR, ShapeWorldClassifier
from ..shapeworld.domain import LABELS, find_concept
from ..utils.images import to_uint8
from ..version import __version__
from .base import Detector, DetectorUnavailable

BATCH = 500


@lru_cache(maxsize=1)
def shipped_classifier() -> ShapeWorldClassifier:
    """The shipped classifier, loaded once per process."""
    if not (CLASSIFIER_DIR / "model.safetensors").exists():
        raise DetectorUnavailable(f"the ShapeWorld classifier is not installed at {CLASSIFIER_DIR}")
    return ShapeWorldClassifier.load()


def predictions(classifier: ShapeWorldClassifier, images) -> dict[str, torch.Tensor]:
    """Per-attribute class probabilities, in batches of 500 images (one pass of the classifier)."""
    arrays = to_uint8(images)
    parts: dict[str, list[torch.Tensor]] = {a: [] for a in LABELS}
    for i in range(0, len(arrays), BATCH):
        for attribute, p in classifier.probabilities(arrays[i:i + BATCH]).items():
            parts[attribute].append(p)
    return {a: torch.cat(p) if p else torch.empty(0, len(LABELS[a])) for a, p in parts.items()}


def shapeworld_detector(concept: str, classifier: ShapeWorldClassifier | None = None) -> Detector:
    """Probability = the classifier's probability of the concept's value; an image shows it when that value is
    the classifier's most probable one for the attribute."""
    attribute, value = find_concept(concept)
    classifier = classifier or shipped_classifier()
    index = LABELS[attribute].index(value.name)

    def probabilities(images) -> torch.Tensor:
        return predictions(classifier, images)[attribute][:, index]

    def verdicts(images) -> torch.Tensor:
        return predictions(classifier, images)[attribute].argmax(-1) == index

    return Detector(f"shapeworld-classifier[{attribute}={value.name}]", probabilities, verdicts,
                    settings={"attribute": attribute, "value": value.name, "version": "erasekit " + __version__})


def judge_each(images, targets: list[dict[str, str]], classifier: ShapeWorldClassifier | None = None
               ) -> dict[str, list[bool]]:
    """Per attribute the targets name: for each image whose target names it, in order, whether the predicted value
    equals the target (one pass of the classifier over the images)."""
    predicted = {a: p.argmax(-1) for a, p in predictions(classifier or shipped_classifier(), images).items()}
    verdicts = {}
    for attribute in LABELS:
        rows = [(i, t[attribute]) for i, t in enumerate(targets) if attribute in t]
        if rows:
            verdicts[attribute] = [LABELS[attribute][predicted[attribute][i]] == v for i, v in rows]
    return verdicts


def judge(images, targets: list[dict[str, str]], classifier: ShapeWorldClassifier | None = None
          ) -> dict[str, float]:
    """Fraction of images whose predicted value equals the target, per attribute the targets name."""
    return {a: sum(v) / len(v) for a, v in judge_each(images, targets, classifier).items()}
