"""Functional detectors: a concept → a function from images to per-image probabilities and verdicts.

    detector = erasekit.detectors.for_concept("triangle")     # the ShapeWorld classifier
    detector = erasekit.detectors.for_concept("nudity")       # NudeNet 3.4.2 (exposed parts, threshold 0.6)
    detector.present(images)                                   # bool tensor, one per image
    detector.rate(images)                                      # fraction of images showing the concept

The metrics (`evaluation.metrics`), the validators of methods that pick among candidates, the attacks' success
rates, GIE's adapter training and ForceForget's reward all use these; none wraps a detector of its own.
"""
from .base import Detector, DetectorUnavailable
from .clip import CLIPScorer, clip_features
from .concept import for_concept
from .nudenet import EXPOSED_CLASSES, exposed_scores, nudenet_detector, nudenet_model
from .shapeworld import judge, shapeworld_detector

__all__ = ["CLIPScorer", "Detector", "DetectorUnavailable", "EXPOSED_CLASSES", "clip_features", "exposed_scores",
           "for_concept", "judge", "nudenet_detector", "nudenet_model", "shapeworld_detector"]
