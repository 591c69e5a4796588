"""ShapeWorld's concept classifier: a small CNN with one head per attribute (shape incl. "no object", colour,
texture, background). It is erasekit's stand-in for NudeNet and style/object classifiers. Its trainer
(`classifier.train`, on erasekit's training loop) is the command

    python -m erasekit.shapeworld.classifier --data runs/shapeworld/data.npz --vae runs/shapeworld/vae_trained \
        --out src/erasekit/shapeworld/weights/classifier
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ...utils.images import to_unit
from ..domain import LABELS, NO_OBJECT

CLASSIFIER_DIR = Path(__file__).resolve().parents[1] / "weights" / "classifier"
# Colour and texture are undefined when there is no object; their losses and accuracies skip those images.
NEEDS_OBJECT = ("color", "texture")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.SiLU())


class ShapeWorldClassifier(nn.Module):
    """Input: images as float (N, 3, H, W) in [0, 1]. Output: logits per attribute."""

    def __init__(self, width: int = 24):
        super().__init__()
        self.features = nn.Sequential(_block(3, width), nn.MaxPool2d(2), _block(width, 2 * width), nn.MaxPool2d(2),
                                      _block(2 * width, 4 * width))
        self.heads = nn.ModuleDict({a: nn.Linear(8 * width, len(v)) for a, v in LABELS.items()})
        self.width = width

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (mean and max), also used as the feature network for Fréchet distance."""
        h = self.features(images * 2 - 1)
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.embed(images)
        return {a: head(h) for a, head in self.heads.items()}

    @torch.no_grad()
    def probabilities(self, images) -> dict[str, torch.Tensor]:
        """Per-attribute class probabilities for PIL images, uint8 arrays (N,H,W,3) or float tensors in [0, 1]."""
        self.eval()
        return {a: logits.softmax(-1) for a, logits in self(to_unit(images)).items()}

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps({"width": self.width, "labels": LABELS}, indent=2))

    @classmethod
    def load(cls, folder: str | Path = CLASSIFIER_DIR) -> "ShapeWorldClassifier":
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        if {a: tuple(v) for a, v in config["labels"].items()} != LABELS:
            raise ValueError(f"{folder}: classifier labels do not match this ShapeWorld vocabulary")
        model = cls(config["width"])
        model.load_state_dict(load_file(folder / "model.safetensors"))
        return model.eval()


def loss_and_accuracy(logits: dict, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    has_object = labels[:, 0] != LABELS["shape"].index(NO_OBJECT)
    total, accuracy = 0.0, {}
    for k, attribute in enumerate(LABELS):
        keep = has_object if attribute in NEEDS_OBJECT else torch.ones_like(has_object)
        if keep.any():
            total = total + F.cross_entropy(logits[attribute][keep], labels[keep, k])
            accuracy[attribute] = (logits[attribute][keep].argmax(-1) == labels[keep, k]).float().mean().item()
    return total, accuracy


@torch.no_grad()
def evaluate(model: ShapeWorldClassifier, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    logits = {a: [] for a in LABELS}
    for i in range(0, len(images), 500):
        for a, v in model(to_unit(images[i:i + 500])).items():
            logits[a].append(v)
    return loss_and_accuracy({a: torch.cat(v) for a, v in logits.items()}, torch.from_numpy(labels))[1]


def held_out(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Procedural images from a seed disjoint from the training data's."""
    from ..render import scene_images
    scenes, images = scene_images(n, seed)
    return images, np.array([list(scene.labels().values()) for scene in scenes], np.int64)
