import numpy as np
import pytest
import torch

from erasekit.evaluation.metrics import NudeNetNudity, ShapeWorldAttribute
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


def test_shapeworld_prompt_sets_name_the_target_as_asked():
    from erasekit.evaluation.prompts import shapeworld_sets
    attribute, sets = shapeworld_sets("triangle", seeds=2)
    assert attribute == "shape" and set(sets) == {"explicit", "synonym", "implicit", "other"}
    assert all("triangle" in i.prompt for i in sets["explicit"])
    assert not any("triangle" in i.prompt or "trigon" in i.prompt for i in sets["implicit"])
    assert {i.expected["shape"] for i in sets["other"]} == {"circle", "square", "cross", "star", "diamond"}
    attribute, sets = shapeworld_sets("tobias renn", seeds=2)
    assert attribute == "texture" and all("tobias renn" in i.prompt for i in sets["explicit"])
    assert all(i.expected["texture"] == "striped" for i in sets["implicit"])


def test_i2p_and_caption_csv_loaders(tmp_path):
    from erasekit.errors import ErasekitError
    from erasekit.evaluation.prompts import load_captions, load_i2p
    i2p = tmp_path / "i2p.csv"
    i2p.write_text('prompt,categories,sd_seed,sd_guidance_scale\n"a nude",sexual,42,7\n"a gun","violence",3,9\n')
    items = load_i2p(i2p, categories=["sexual"])
    assert [(i.prompt, i.seed, i.guidance, i.categories) for i in items] == [("a nude", 42, 7.0, ["sexual"])]
    assert len(load_i2p(i2p)) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("text,seed\nhello,1\n")
    with pytest.raises(ErasekitError, match="no 'prompt' column"):
        load_i2p(bad)
    with pytest.raises(ErasekitError, match="neither a 'caption'"):
        load_captions(bad)
    coco = tmp_path / "coco.csv"
    coco.write_text("image_id,caption\n1,a dog on a beach\n2,a red bus\n")
    assert [(i.prompt, i.seed) for i in load_captions(coco, default_seed=10)] == [("a dog on a beach", 10),
                                                                                  ("a red bus", 11)]


def test_clip_score_from_a_local_folder(tiny_clip):
    from erasekit.detectors import clip_features
    from erasekit.evaluation.metrics import CLIPScore
    images = procedural("circle", "red", n=2)
    metric = CLIPScore(str(tiny_clip))
    metric.update(images, ["a red cat", "a dog"])
    first = metric.compute().item()
    assert 0 <= first <= 100
    model, processor = metric.model, metric.processor
    inputs = processor(text=["a red cat"], images=list(images[:1]), return_tensors="pt", padding="max_length")
    with torch.no_grad():
        a = clip_features(model.get_image_features(pixel_values=inputs["pixel_values"]))
        b = clip_features(model.get_text_features(input_ids=inputs["input_ids"]))
    single = CLIPScore(str(tiny_clip))
    single.update(images[:1], ["a red cat"])
    assert single.compute().item() == pytest.approx(max(100 * (a * b).sum().item(), 0), abs=1e-3)


def test_missing_clip_model_is_reported_not_faked(tmp_path):
    from erasekit.evaluation.metrics import CLIPScore, EvaluatorUnavailable
    with pytest.raises(EvaluatorUnavailable, match="cannot load CLIP"):
        CLIPScore(str(tmp_path / "no-clip"))


def test_frechet_and_kernel_distance_with_classifier_features():
    from erasekit.evaluation.metrics import frechet_distance, kernel_distance
    from erasekit.utils.images import to_unit
    reds = np.stack([render(Scene("circle", "red", "solid", "white"), i) for i in range(40)])
    more_reds = np.stack([render(Scene("circle", "red", "solid", "white"), 100 + i) for i in range(40)])
    blues = np.stack([render(Scene("star", "blue", "striped", "black"), i) for i in range(40)])

    def distance(make, a, b):
        metric = make()
        metric.update(to_unit(a), real=True)
        metric.update(to_unit(b), real=False)
        out = metric.compute()
        return float(out[0] if isinstance(out, tuple) else out)

    assert distance(frechet_distance, reds, more_reds) < 0.2 * distance(frechet_distance, reds, blues)
    assert distance(lambda: kernel_distance(subset_size=20), reds, more_reds) < \
        distance(lambda: kernel_distance(subset_size=20), reds, blues)
