"""The detector for a concept: the ShapeWorld classifier for ShapeWorld concepts, NudeNet for the rest."""
from __future__ import annotations

from ..errors import ErasekitError
from ..shapeworld.domain import find_concept
from .base import Detector
from .nudenet import nudenet_detector
from .shapeworld import shapeworld_detector


def for_concept(concept: str, evaluator: str | None = None, threshold: float = 0.6, classifier=None) -> Detector:
    """The ShapeWorld classifier for a ShapeWorld concept, NudeNet otherwise; `evaluator` ("shapeworld" or
    "nudenet") forces one."""
    if evaluator not in (None, "shapeworld", "nudenet"):
        raise ErasekitError(f"unknown evaluator {evaluator!r}; use shapeworld or nudenet")
    if evaluator is None:
        try:
            find_concept(concept)
            evaluator = "shapeworld"
        except KeyError:
            evaluator = "nudenet"
    if evaluator == "shapeworld":
        return shapeworld_detector(concept, classifier)
    return nudenet_detector(threshold)
