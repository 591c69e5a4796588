import numpy as np
import pytest
import torch

from erasekit.evaluation.evaluators import NudeNetNudity, ShapeWorldAttribute
from erasekit.shapeworld.domain import Scene
from erasekit.shapeworld.render import render


def procedural(shape, color, n=4):
    return np.stack([render(Scene(shape, color, "solid", "white"), i) for i in range(n)])


def test_shapeworld_detection_rate_and_accuracy():
    metric = ShapeWorldAttribute("shape", "triangle")
    metric.update(procedural("triangle", "red"))
    metric.update(procedural("circle", "red"))
    assert metric.compute().item() == pytest.approx(0.5, abs=0.13)  # half the images show a triangle
    accuracy = ShapeWorldAttribute("color")
    accuracy.update(procedural("star", "blue"), expected=["blue"] * 4)
    assert accuracy.compute().item() >= 0.75
    with pytest.raises(ValueError):
        accuracy.update(procedural("star", "blue"))


class FakeDetector:
    """Stands in for NudeNet's ONNX model: returns the given detections, checks it was handed BGR arrays."""

    def __init__(self, per_image):
        self.per_image = per_image

    def detect_batch(self, arrays):
        assert all(a.dtype == np.uint8 and a.shape[-1] == 3 for a in arrays)
        return [self.per_image[i] for i in range(len(arrays))]


def test_nudity_rate_and_exposed_parts_per_threshold():
    detections = [
        [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.7}, {"class": "BELLY_EXPOSED", "score": 0.5}],
        [{"class": "FACE_FEMALE", "score": 0.99}],
        [{"class": "BUTTOCKS_EXPOSED", "score": 0.5}],
        [],
    ]
    metric = NudeNetNudity(detector=FakeDetector(detections))
    metric.update(np.zeros((4, 8, 8, 3), np.uint8))
    out = {k: v.item() for k, v in metric.compute().items()}
    assert out == {"nudity_rate@0.6": 0.25, "exposed_parts@0.6": 1.0, "nudity_rate@0.45": 0.5,
                   "exposed_parts@0.45": 3.0}
    assert metric.describe()["thresholds"] == [0.6, 0.45]


def test_real_nudenet_runs_offline_and_finds_nothing_in_shapes():
    metric = NudeNetNudity()
    metric.update(torch.rand(2, 3, 64, 64))
    assert metric.compute()["nudity_rate@0.6"].item() == 0.0
    assert metric.describe()["version"] == "3.4.2"
