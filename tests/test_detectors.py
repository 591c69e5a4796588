"""The functional detector layer: one detector per concept, used by every metric, validator and attack."""
import numpy as np
import pytest
import torch

from erasekit.detectors import Detector, for_concept, nudenet_detector, nudenet_model, shapeworld_detector
from erasekit.evaluation.metrics import DetectionRate, ShapeWorldAttribute
from erasekit.shapeworld.domain import Scene
from erasekit.shapeworld.render import render


def procedural(shape, texture="solid", n=4):
    return np.stack([render(Scene(shape, "red", texture, "white"), i) for i in range(n)])


def test_shapeworld_detector_agrees_with_the_metric_and_sees_artists():
    images = np.concatenate([procedural("triangle"), procedural("circle")])
    detector = for_concept("triangle")
    assert detector.name == "shapeworld-classifier[shape=triangle]"
    flags = detector.present(images)
    assert flags.dtype == torch.bool and flags.tolist() == [True] * 4 + [False] * 4
    metric = ShapeWorldAttribute("shape", "triangle")
    metric.update(images)
    rate = DetectionRate(detector)
    rate.update(images[:3])
    rate.update(images[3:])
    assert detector.rate(images) == metric.compute().item() == rate.compute().item() == 0.5
    probabilities = detector.probabilities(images)
    assert ((probabilities >= 0) & (probabilities <= 1)).all() and probabilities[:4].min() > probabilities[4:].max()
    artist = shapeworld_detector("tobias renn")  # an artist's name is its texture
    assert artist.present(procedural("star", "striped")).all() and not artist.present(procedural("star")).any()


class FakeNudeNet:
    def detect_batch(self, arrays):
        return [[{"class": "FEMALE_BREAST_EXPOSED", "score": 0.5}], [{"class": "FACE_FEMALE", "score": 0.9}]]


def test_nudenet_detector_thresholds_the_highest_exposed_score():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    assert nudenet_detector(0.45, model=FakeNudeNet()).present(images).tolist() == [True, False]
    assert nudenet_detector(0.6, model=FakeNudeNet()).present(images).tolist() == [False, False]
    assert nudenet_detector(0.6, model=FakeNudeNet()).probabilities(images).tolist() == [0.5, 0.0]
    assert for_concept("nudity").name == "nudenet@0.6"


def test_nudenet_is_built_once_per_process():
    assert nudenet_model() is nudenet_model()


def test_custom_detector_with_a_threshold():
    detector = Detector("mean-brightness", lambda images: torch.as_tensor(images).float().mean(dim=(1, 2, 3)) / 255)
    images = np.stack([np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)])
    assert detector.present(images).tolist() == [False, True] and detector.rate(images) == 0.5
    with pytest.raises(Exception, match="unknown evaluator"):
        for_concept("triangle", evaluator="clip")


def test_judge_each_gives_one_verdict_per_image_naming_the_attribute_and_judge_their_share():
    from erasekit.detectors.shapeworld import judge, judge_each
    images = np.concatenate([procedural("square", n=2), procedural("circle", "striped", n=2)])
    targets = [{"shape": "square"}, {"shape": "circle", "color": "red"}, {"texture": "striped"},
               {"shape": "circle", "texture": "dotted"}]
    verdicts = judge_each(images, targets)
    assert verdicts == {"shape": [True, False, True], "color": [True], "texture": [True, False]}
    assert judge(images, targets) == {"shape": 2 / 3, "color": 1.0, "texture": 0.5}
